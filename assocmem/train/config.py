"""The training run's config: one flat, typed dataclass read from TOML, with `--set key=value` overrides.

The model is a preset name plus `[model]` overrides of its config (AssocMemConfig keys), or, with
`model_class = "module:Class"`, any Hugging Face causal LM (a PreTrainedModel with a `config_class`) whose
config `[model]` gives; the vocabulary size always comes from the tokenizer.
"""

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PARALLEL = ("none", "ddp", "fsdp")


@dataclass
class TrainConfig:
    # model
    preset: str = "deltanet-swa-tiny"
    model: dict = field(default_factory=dict)
    model_class: str = ""  # "module:Class" of another Hugging Face causal LM; empty: ours, from `preset`
    # data
    corpus: str = "stdlib"
    tokenizer: str = ""  # a tokenizer.json / tokenizer folder; empty: train a byte-level BPE on the corpus
    vocab_size: int = 4096
    val_fraction: float = 0.05
    seq_len: int = 256
    document_masking: bool = True  # reset DeltaNet state and attention at document boundaries
    cache_dir: str = "~/.cache/assocmem"
    # optimisation
    batch_size: int = 16  # sequences per optimizer step, over all processes and accumulation steps
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # execution
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    activation_checkpointing: bool = False
    parallel: str = "none"  # none | ddp | fsdp (under torchrun)
    seed: int = 0
    threads: int = 0  # CPU threads for torch; 0 leaves torch's default
    # output
    out_dir: str = "runs/default"
    log_every: int = 10
    eval_every: int = 200
    eval_batches: int = 20
    save_every: int = 200
    keep_last: int = 2
    sample_tokens: int = 120
    sample_prompt: str = "def "
    progress: bool = True

    def __post_init__(self):
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {self.parallel!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("seq_len", "batch_size", "grad_accum", "max_steps", "keep_last", "log_every", "eval_every",
                     "save_every", "eval_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")
        if not isinstance(self.model, dict):
            raise TypeError(f"model must be a table of AssocMemConfig overrides, got {type(self.model).__name__}")
        if "vocab_size" in self.model:
            raise ValueError("set the vocabulary with vocab_size (the tokenizer's), not model.vocab_size")
        if self.model_class:
            module, _, name = self.model_class.partition(":")
            if not module or not name:
                raise ValueError(f"model_class must look like 'module:Class', got {self.model_class!r}")
            if self.document_masking:
                raise ValueError(f"document_masking needs a model that takes cu_seqlens (ours); set "
                                 f"document_masking = false for model_class {self.model_class!r}")  # fmt: skip

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        unknown = sorted(set(values) - set(cls.keys()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {cls.keys()}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        checked = {}
        for key, value in values.items():
            kind = types[key]
            expected = (int, float) if kind is float else kind
            if (isinstance(value, bool) and kind is not bool) or not isinstance(value, expected):
                raise TypeError(f"config key {key!r} expects {kind.__name__}, got {value!r}")
            checked[key] = float(value) if kind is float else value
        return cls(**checked)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_override(text: str) -> tuple[str, object]:
    """'key=value' with a TOML value (numbers, true/false, "strings"; a bare word is a string).
    'model.key=value' sets one model override."""
    if "=" not in text:
        raise ValueError(f"--set expects key=value, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        values = tomllib.loads(path.read_text())
    values = dict(values)
    values["model"] = dict(values.get("model", {}))
    for item in overrides:
        key, value = parse_override(item)
        if key.startswith("model."):
            values["model"][key[len("model."):]] = value
        else:
            values[key] = value
    return TrainConfig.from_dict(values)
