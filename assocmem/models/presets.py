"""Presets: the paper's four language models by config alone, at sizes from tiny (CPU tests) to 1.3B.

Architectures (N layers):
  deltanet        every layer DeltaNet
  transformer++   every layer global softmax attention (rotary, SwiGLU, RMSNorm)
  deltanet-swa    sliding-window attention every other layer (layers 2, 4, ... counted from 1)
  deltanet-2attn  global attention in layers 2 and N/2 + 1, DeltaNet elsewhere
Sizes (head size 128 at the paper's sizes, as in the paper):
  tiny   hidden 64, 4 layers, 4 heads, vocab 512     (seconds on a CPU)
  small  hidden 256, 8 layers, 4 heads, vocab 8192   (minutes on a CPU)
  340m   hidden 1024, 24 layers, 8 heads, vocab 32000
  1.3b   hidden 2048, 24 layers, 16 heads, vocab 32000
The sliding window is 512 tokens at the two large sizes (a quarter of their 2048-token training
length), 64 at small and 16 at tiny; `window_size=` overrides it.
"""

from .config import AssocMemConfig

ARCHITECTURES = ("deltanet", "transformer++", "deltanet-swa", "deltanet-2attn")
SIZES = {
    "tiny": dict(hidden_size=64, num_layers=4, num_heads=4, vocab_size=512, mlp_multiple_of=32, window_size=16),
    "small": dict(hidden_size=256, num_layers=8, num_heads=4, vocab_size=8192, mlp_multiple_of=64, window_size=64),
    "340m": dict(hidden_size=1024, num_layers=24, num_heads=8, vocab_size=32000, mlp_multiple_of=256, window_size=512),
    "1.3b": dict(hidden_size=2048, num_layers=24, num_heads=16, vocab_size=32000, mlp_multiple_of=256,
                 window_size=512),
}
PRESETS = tuple(f"{arch}-{size}" for arch in ARCHITECTURES for size in SIZES)


def layer_schedule(architecture: str, num_layers: int) -> list[str]:
    if architecture == "deltanet":
        return ["deltanet"] * num_layers
    if architecture == "transformer++":
        return ["attention"] * num_layers
    if architecture == "deltanet-swa":
        return ["swa" if i % 2 == 1 else "deltanet" for i in range(num_layers)]
    if architecture == "deltanet-2attn":
        return ["attention" if i in (1, num_layers // 2) else "deltanet" for i in range(num_layers)]
    raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")


def preset_config(name: str, **overrides) -> AssocMemConfig:
    """Config of preset `name` ("<architecture>-<size>", e.g. "deltanet-swa-340m"); keys in `overrides`
    replace the preset's (unknown keys raise)."""
    for size in SIZES:
        if name.endswith("-" + size) and name[: -len(size) - 1] in ARCHITECTURES:
            architecture = name[: -len(size) - 1]
            break
    else:
        raise ValueError(f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    spec = dict(SIZES[size])
    num_layers = overrides.pop("num_layers", spec.pop("num_layers"))
    spec.pop("num_layers", None)
    if "swa" not in layer_schedule(architecture, num_layers):
        spec["window_size"] = None
    values = dict(spec, layer_types=layer_schedule(architecture, num_layers))
    values.update(overrides)
    return AssocMemConfig(**values)


def parameter_count_formula(config: AssocMemConfig) -> int:
    """Number of parameters, from the config alone (tests hold the model to it)."""
    C, V, I, W = config.hidden_size, config.vocab_size, config.intermediate_size, config.conv_size
    H, D, G = config.num_heads, config.head_dim, config.num_kv_heads
    deltanet = 4 * C * C + C * H + D  # q, k, v, o projections; beta; per-head output norm
    if config.use_short_conv:
        deltanet += 3 * C * W
    if config.use_output_gate:
        deltanet += C * C
    attention = 2 * C * H * D + 2 * C * G * D  # q and o; k and v with G key/value heads
    block = 2 * C + 3 * C * I  # two norms, SwiGLU
    total = V * C + C  # embeddings, final norm
    total += 0 if config.tie_word_embeddings else V * C
    for layer_type in config.mixer_types:
        total += block + (deltanet if layer_type == "deltanet" else attention)
    return total
