"""Checkpoints of flash-linear-attention's DeltaNet language model (`DeltaNetForCausalLM`, Hugging Face
directory with `model_type: delta_net`) to ours and back: `assocmem convert fla SRC DST`.

The two models compute the same function: q, k, v = SiLU(ShortConv(W x)), L2-normalised q and k,
beta = sigmoid(W_beta x), the delta rule with scale K^-1/2, a per-head RMSNorm (gated with `use_gate`),
pre-norm blocks with a SwiGLU MLP. Only names and shapes differ:

    fla                                         ours
    model.embeddings                            model.embed_tokens
    model.layers.i.attn_norm                    model.layers.i.mixer_norm
    model.layers.i.attn.{q,k,v}_conv1d [C,1,W]  model.layers.i.mixer.{q,k,v}_conv [C, W]
    model.layers.i.attn.*                       model.layers.i.mixer.*
    (mlp, mlp_norm, model.norm, lm_head: the same)

Supported: what both implement — expand_k = expand_v = 1, beta on, L2 q/k norm with SiLU, output norm,
no convolution bias, DeltaNet in every layer (fla's `attn` hybrids need flash-attn and are refused).
Anything else raises a ValueError that names the field. The tensors keep their dtype; the tokenizer and
generation files are copied; DST is written in a temporary folder and renamed into place at the end.
"""

import json
import os
import shutil
from pathlib import Path

import torch

COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                "generation_config.json")  # fmt: skip
# fla config value each supported checkpoint must have (missing keys take fla's defaults, given here).
FLA_REQUIRED = {"expand_k": 1.0, "expand_v": 1.0, "use_beta": True, "use_output_norm": True, "qk_norm": "l2",
                "qk_activation": "silu", "hidden_act": "swish", "attn": None, "attnres_block_size": None}  # fmt: skip
FLA_DEFAULTS = {"hidden_size": 2048, "num_heads": 16, "num_hidden_layers": 24, "conv_size": 4, "use_short_conv": True,
                "use_gate": False, "allow_neg_eigval": False, "hidden_ratio": 4, "intermediate_size": None,
                "norm_eps": 1e-6, "max_position_embeddings": 2048, "tie_word_embeddings": False,
                "initializer_range": 0.02, "vocab_size": 32000, "bos_token_id": 1, "eos_token_id": 2,
                "pad_token_id": None}  # fmt: skip


def fla_intermediate_size(hidden_size: int, hidden_ratio: float | None, intermediate_size: int | None) -> int:
    """fla's SwiGLU width: given, else 2/3 * ratio * hidden rounded up to a multiple of 256."""
    if intermediate_size is not None:
        return int(intermediate_size)
    width = int(hidden_size * (4 if hidden_ratio is None else hidden_ratio) * 2 / 3)
    return 256 * ((width + 255) // 256)


def config_from_fla(fla: dict):
    """Our `AssocMemConfig` for an fla DeltaNet config (dict from its config.json)."""
    from .config import AssocMemConfig

    if fla.get("model_type") != "delta_net":
        got = fla.get("model_type")
        raise ValueError(f"convert: expected an fla DeltaNet config (model_type 'delta_net'), got {got!r}")
    for key, want in FLA_REQUIRED.items():
        got = fla.get(key, want)
        if got != want:
            raise ValueError(f"convert: fla config has {key} = {got!r}; only {want!r} is supported")
    c = {**FLA_DEFAULTS, **{k: fla[k] for k in FLA_DEFAULTS if k in fla}}
    return AssocMemConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], num_heads=c["num_heads"],
        layer_types=["deltanet"] * c["num_hidden_layers"],
        intermediate_size=fla_intermediate_size(c["hidden_size"], c["hidden_ratio"], c["intermediate_size"]),
        use_short_conv=c["use_short_conv"], conv_size=c["conv_size"], allow_neg_eigval=c["allow_neg_eigval"],
        use_output_gate=c["use_gate"], norm_eps=c["norm_eps"], max_position_embeddings=c["max_position_embeddings"],
        tie_word_embeddings=c["tie_word_embeddings"], initializer_range=c["initializer_range"],
        bos_token_id=c["bos_token_id"], eos_token_id=c["eos_token_id"], pad_token_id=c["pad_token_id"],
    )  # fmt: skip


def config_to_fla(config) -> dict:
    """An fla DeltaNet config dict (for its config.json) for our config."""
    bad = sorted(set(config.layer_types) - {"deltanet"})
    if bad:
        raise ValueError(f"convert: fla's DeltaNet model has DeltaNet in every layer; this config also has {bad}")
    if not config.use_delta_rule:
        raise ValueError("convert: use_delta_rule=False (plain linear attention) has no fla DeltaNet counterpart")
    return {
        "model_type": "delta_net", "architectures": ["DeltaNetForCausalLM"], "attn_mode": "chunk",
        "hidden_size": config.hidden_size, "num_heads": config.num_heads, "num_hidden_layers": config.num_hidden_layers,
        "expand_k": 1.0, "expand_v": 1.0, "use_gate": config.use_output_gate, "use_short_conv": config.use_short_conv,
        "allow_neg_eigval": config.allow_neg_eigval, "conv_size": config.conv_size, "use_beta": True,
        "use_output_norm": True, "qk_norm": "l2", "qk_activation": "silu",
        "max_position_embeddings": config.max_position_embeddings, "hidden_ratio": 4,
        "intermediate_size": config.intermediate_size, "hidden_act": "swish", "norm_eps": config.norm_eps,
        "attn": None, "vocab_size": config.vocab_size, "tie_word_embeddings": config.tie_word_embeddings,
        "initializer_range": config.initializer_range, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id, "use_cache": True,
    }  # fmt: skip


def _rename(key: str, to_ours: bool) -> str:
    pairs = [("model.embeddings.", "model.embed_tokens."), (".attn_norm.", ".mixer_norm."), (".attn.", ".mixer."),
             ("_conv1d.", "_conv.")]  # fmt: skip
    for fla, ours in pairs:
        key = key.replace(fla, ours) if to_ours else key.replace(ours, fla)
    return key


def state_dict_from_fla(state: dict) -> dict:
    out = {}
    for key, x in state.items():
        if key.endswith("_conv1d.bias"):
            raise ValueError(f"convert: {key}: convolutions with a bias are not supported")
        new = _rename(key, to_ours=True)
        out[new] = x[:, 0] if key.endswith("_conv1d.weight") else x
    return out


def state_dict_to_fla(state: dict) -> dict:
    out = {}
    for key, x in state.items():
        new = _rename(key, to_ours=False)
        out[new] = x[:, None] if new.endswith("_conv1d.weight") else x
    return out


def _read_weights(src: Path) -> dict:
    from safetensors.torch import load_file

    files = sorted(src.glob("*.safetensors"))
    if files:
        state = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    bins = sorted(src.glob("pytorch_model*.bin"))
    if bins:
        state = {}
        for f in bins:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        return state
    raise FileNotFoundError(f"convert: no *.safetensors or pytorch_model*.bin weights in {src}")


def _write_dir(dst: Path, write) -> None:
    """Write into DST.partial, then rename into place: a crash leaves no half-written DST."""
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"convert: {dst} exists and is not empty; choose a new folder")
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if dst.exists():
        dst.rmdir()
    os.replace(tmp, dst)


def _copy_extras(src: Path, dst: Path) -> None:
    for name in COPIED_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def from_fla(src: str | Path, dst: str | Path) -> Path:
    """fla DeltaNet checkpoint folder → our checkpoint folder (loadable with AssocMemForCausalLM.from_pretrained)."""
    from .modeling import AssocMemForCausalLM

    src, dst = Path(src), Path(dst)
    config = config_from_fla(json.loads((src / "config.json").read_text()))
    state = state_dict_from_fla(_read_weights(src))
    dtype = state["model.embed_tokens.weight"].dtype
    model = AssocMemForCausalLM(config).to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"convert: weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def write(tmp):
        model.save_pretrained(tmp)
        _copy_extras(src, tmp)

    _write_dir(dst, write)
    return dst


def to_fla(src: str | Path, dst: str | Path) -> Path:
    """Our checkpoint folder → an fla DeltaNet checkpoint folder (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    from .config import AssocMemConfig

    src, dst = Path(src), Path(dst)
    config = AssocMemConfig.from_pretrained(src)
    fla_config = config_to_fla(config)
    state = state_dict_to_fla(_read_weights(src))
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    fla_config["torch_dtype"] = str(state["model.embeddings.weight"].dtype).removeprefix("torch.")

    def write(tmp):
        (tmp / "config.json").write_text(json.dumps(fla_config, indent=2) + "\n")
        tensors = {k: v.contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _copy_extras(src, tmp)

    _write_dir(dst, write)
    return dst


def convert(src: str | Path, dst: str | Path) -> tuple[str, Path]:
    """Either direction, by SRC's model_type: ('to assocmem' | 'to fla', DST)."""
    path = Path(src) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"convert: {path} not found; SRC must be a Hugging Face checkpoint folder")
    model_type = json.loads(path.read_text()).get("model_type")
    if model_type == "delta_net":
        return "to assocmem", from_fla(src, dst)
    if model_type == "assocmem":
        return "to fla", to_fla(src, dst)
    raise ValueError(f"convert: SRC's model_type is {model_type!r}; expected 'delta_net' (fla) or 'assocmem' (ours)")
