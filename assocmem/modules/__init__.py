"""Small nn.Modules shared by the layers: norms, short convolution, SwiGLU MLP, rotary embeddings."""

from .conv import ShortConvolution
from .mlp import SwiGLU, swiglu_hidden_size
from .norm import GatedRMSNorm, RMSNorm
from .rotary import RotaryEmbedding, apply_rotary

__all__ = ["RMSNorm", "GatedRMSNorm", "ShortConvolution", "SwiGLU", "swiglu_hidden_size", "RotaryEmbedding",
           "apply_rotary"]
