"""Configs and models built from the layers: language models (DeltaNet, Transformer++, hybrids).

Importing this package registers the config and model with Hugging Face's Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .cache import AssocMemCache
from .config import LAYER_TYPES, AssocMemConfig
from .modeling import AssocMemForCausalLM, AssocMemModel
from .presets import PRESETS, parameter_count_formula, preset_config

AutoConfig.register(AssocMemConfig.model_type, AssocMemConfig, exist_ok=True)
AutoModel.register(AssocMemConfig, AssocMemModel, exist_ok=True)
AutoModelForCausalLM.register(AssocMemConfig, AssocMemForCausalLM, exist_ok=True)

__all__ = ["AssocMemConfig", "AssocMemModel", "AssocMemForCausalLM", "AssocMemCache", "LAYER_TYPES", "PRESETS",
           "preset_config", "parameter_count_formula"]
