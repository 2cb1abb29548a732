"""Pure functions with no parameters: the delta rule (and, beside it, Hopfield retrieval and attention)."""

from .delta_rule import delta_rule

__all__ = ["delta_rule"]
