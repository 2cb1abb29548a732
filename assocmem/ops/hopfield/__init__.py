"""Modern Hopfield networks: retrieval by the update ξ ← X softmax(β Xᵀξ), and its energy."""

from .retrieval import association, energy, retrieve

__all__ = ["retrieve", "energy", "association"]
