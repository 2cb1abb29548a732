"""The one typed config of our language models: DeltaNet, Transformer++ and their hybrids.

A hybrid is data: `layer_types` lists each layer's token mixer, "deltanet", "attention" (global
causal softmax attention) or "swa" (sliding-window attention of `window_size` tokens).
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..modules import swiglu_hidden_size

LAYER_TYPES = ("deltanet", "attention", "swa")
# Newer transformers rewrites "attention" to "full_attention" inside every config it builds; both
# spellings (and "sliding_attention" for "swa") mean the same layer here.
LAYER_TYPE_ALIASES = {"full_attention": "attention", "sliding_attention": "swa"}
DELTA_RULE_BACKENDS = ("auto", "chunk", "naive")
# Keys that Hugging Face itself writes into or passes with a config; anything else unknown is an error.
_HF_KEYS = {"model_type", "transformers_version", "torch_dtype", "architectures", "name_or_path"}


@strict
class AssocMemConfig(PreTrainedConfig):
    """Config of `AssocMemForCausalLM`. Unknown keys raise a ValueError naming them.

    Sizes: hidden_size split into num_heads heads of hidden_size // num_heads (attention layers may
    use fewer key/value heads, num_kv_heads). The SwiGLU width is `intermediate_size`, or when None
    2/3 * mlp_ratio * hidden_size rounded up to a multiple of mlp_multiple_of.
    """

    model_type = "assocmem"
    attribute_map = {"num_attention_heads": "num_heads", "num_key_value_heads": "num_kv_heads"}

    vocab_size: int = 32000
    hidden_size: int = 1024
    layer_types: list[str] | None = None
    num_heads: int = 8
    num_kv_heads: int | None = None
    mlp_ratio: float = 4.0
    intermediate_size: int | None = None
    mlp_multiple_of: int = 256
    window_size: int | None = None
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    use_short_conv: bool = True
    conv_size: int = 4
    allow_neg_eigval: bool = False
    use_output_gate: bool = False
    use_delta_rule: bool = True
    delta_rule_backend: str = "auto"
    chunk_size: int = 64
    norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self, **kwargs):
        unknown = sorted(key for key in kwargs if key not in _HF_KEYS and not key.startswith("_"))
        if unknown:
            raise ValueError(f"AssocMemConfig: unknown key(s) {unknown}; known keys: {sorted(self.known_keys())}")
        if self.layer_types is None:
            self.layer_types = ["deltanet"] * 24
        self.layer_types = list(self.layer_types)
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.intermediate_size is None and self.mlp_ratio > 0 and self.mlp_multiple_of > 0:
            self.intermediate_size = swiglu_hidden_size(self.hidden_size, self.mlp_ratio, self.mlp_multiple_of)
        # Checked here first so that a bad config raises a plain ValueError, not the dataclass wrapper.
        self.validate_layer_type()
        self.validate_architecture()
        super().__post_init__(**kwargs)

    @classmethod
    def known_keys(cls) -> set[str]:
        """The keys this config declares (Hugging Face's common keys are accepted as well)."""
        return set(AssocMemConfig.__annotations__)

    @property
    def num_hidden_layers(self) -> int:
        return len(self.layer_types)

    @property
    def mixer_types(self) -> list[str]:
        """layer_types with Hugging Face's spellings mapped to ours ("deltanet", "attention", "swa")."""
        return [LAYER_TYPE_ALIASES.get(t, t) for t in self.layer_types]

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate_layer_type(self):
        """Each layer type is one of LAYER_TYPES; a sliding window needs a positive window_size."""
        if not self.layer_types:
            raise ValueError("AssocMemConfig: layer_types must list at least one layer")
        bad = [(i, t) for i, t in enumerate(self.layer_types) if t not in LAYER_TYPES and t not in LAYER_TYPE_ALIASES]
        if bad:
            raise ValueError(f"AssocMemConfig: layer_types entries must be one of {LAYER_TYPES}; got {bad} "
                             "as (index, type)")
        if self.window_size is not None and self.window_size <= 0:
            raise ValueError(f"AssocMemConfig: window_size must be a positive number of tokens, got {self.window_size}")
        if "swa" in self.mixer_types and self.window_size is None:
            raise ValueError("AssocMemConfig: layer_types has 'swa' layers, so window_size must be set")

    def validate_architecture(self):
        positive = ("vocab_size", "hidden_size", "num_heads", "num_kv_heads", "intermediate_size", "conv_size",
                    "max_position_embeddings")
        for name in positive:
            value = getattr(self, name)
            if value is None or value <= 0:
                raise ValueError(f"AssocMemConfig: {name} must be positive, got {value}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"AssocMemConfig: num_heads ({self.num_heads}) must divide hidden_size "
                             f"({self.hidden_size})")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"AssocMemConfig: num_kv_heads ({self.num_kv_heads}) must divide num_heads "
                             f"({self.num_heads})")
        if any(t != "deltanet" for t in self.mixer_types) and self.head_dim % 2:
            raise ValueError(f"AssocMemConfig: attention layers need an even head size for rotary embeddings, "
                             f"got hidden_size / num_heads = {self.head_dim}")
        if self.delta_rule_backend not in DELTA_RULE_BACKENDS:
            raise ValueError(f"AssocMemConfig: delta_rule_backend must be one of {DELTA_RULE_BACKENDS}, "
                             f"got {self.delta_rule_backend!r}")
        if self.chunk_size not in (16, 32, 64, 128):
            raise ValueError(f"AssocMemConfig: chunk_size must be one of (16, 32, 64, 128), got {self.chunk_size}")
