"""Token mixers and memory layers built on assocmem.ops: DeltaNet, attention, Hopfield layers."""

from .hopfield import Hopfield, HopfieldLayer, HopfieldPooling

__all__ = ["Hopfield", "HopfieldPooling", "HopfieldLayer"]
