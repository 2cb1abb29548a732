"""Token mixers and memory layers built on assocmem.ops: DeltaNet, attention, Hopfield layers."""

from .attention import Attention
from .deltanet import DeltaNet
from .hopfield import Hopfield, HopfieldLayer, HopfieldPooling
from .state import AttentionState, DeltaNetState

__all__ = ["DeltaNet", "Attention", "DeltaNetState", "AttentionState", "Hopfield", "HopfieldPooling",
           "HopfieldLayer"]
