"""assocmem: sequence models built on associative memory (DeltaNet, modern Hopfield networks)."""

from .ops.delta_rule import delta_rule

__version__ = "0.1.0"
__all__ = ["delta_rule", "__version__"]
