"""assocmem: sequence models built on associative memory (DeltaNet, modern Hopfield networks).

Importing assocmem registers its language models with Hugging Face's AutoConfig / AutoModelForCausalLM.
"""

from .layers import Attention, DeltaNet, Hopfield, HopfieldLayer, HopfieldPooling
from .models import AssocMemConfig, AssocMemForCausalLM, AssocMemModel, preset_config
from .ops.delta_rule import delta_rule

__version__ = "0.1.0"
__all__ = [
    "delta_rule",
    "DeltaNet",
    "Attention",
    "Hopfield",
    "HopfieldPooling",
    "HopfieldLayer",
    "AssocMemConfig",
    "AssocMemModel",
    "AssocMemForCausalLM",
    "preset_config",
    "__version__",
]
