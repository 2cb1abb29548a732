"""`assocmem convert fla`: fla DeltaNet checkpoints to ours and back.

The round trip needs nothing but our own model. Where flash-linear-attention is importable (it is in the
dev extra; on the CPU its Triton kernels run under the interpreter) fla's own model code computes the
logits that ours must reproduce after conversion.
"""

import importlib.util
import json

import pytest
import torch

from assocmem.cli import main
from assocmem.models import AssocMemConfig, AssocMemForCausalLM
from assocmem.models.fla_interop import config_from_fla, config_to_fla, convert, fla_intermediate_size


def tiny(**changes):
    kw = dict(vocab_size=97, hidden_size=64, num_heads=2, layer_types=["deltanet"] * 2, intermediate_size=96,
              use_output_gate=False, bos_token_id=1, eos_token_id=2)  # fmt: skip
    return AssocMemConfig(**{**kw, **changes})


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("changes", [{}, {"use_output_gate": True, "allow_neg_eigval": True, "conv_size": 3},
                                     {"use_short_conv": False, "tie_word_embeddings": True}])  # fmt: skip
def test_ours_to_fla_and_back_is_exact(tmp_path, changes):
    torch.manual_seed(0)
    model = AssocMemForCausalLM(tiny(**changes)).eval()
    model.save_pretrained(tmp_path / "ours")
    (tmp_path / "ours" / "tokenizer_config.json").write_text("{}")
    assert main(["convert", "fla", str(tmp_path / "ours"), str(tmp_path / "fla")]) == 0
    fla_cfg = json.loads((tmp_path / "fla" / "config.json").read_text())
    assert fla_cfg["model_type"] == "delta_net" and fla_cfg["intermediate_size"] == 96
    assert (tmp_path / "fla" / "tokenizer_config.json").is_file()
    from safetensors.torch import load_file

    fla_state = load_file(str(tmp_path / "fla" / "model.safetensors"))
    assert "model.embeddings.weight" in fla_state and "model.layers.1.attn.o_proj.weight" in fla_state
    if model.config.use_short_conv:
        assert fla_state["model.layers.0.attn.q_conv1d.weight"].shape == (64, 1, model.config.conv_size)
    assert ("lm_head.weight" in fla_state) == (not model.config.tie_word_embeddings)
    direction, _ = convert(tmp_path / "fla", tmp_path / "back")
    assert direction == "to assocmem"
    back = AssocMemForCausalLM.from_pretrained(tmp_path / "back").eval()
    for key, x in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], x), key
    ids = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, model(ids).logits)


def test_fla_config_fields_map_and_unsupported_ones_are_named():
    fla = config_to_fla(tiny())
    ours = config_from_fla(fla)
    assert ours.layer_types == ["deltanet"] * 2 and ours.intermediate_size == 96 and ours.num_heads == 2
    # fla's own width rule when intermediate_size is not given
    assert fla_intermediate_size(2048, 4, None) == 5632 and fla_intermediate_size(64, 4, None) == 256
    assert config_from_fla({**fla, "intermediate_size": None}).intermediate_size == 256
    for key, value in [("expand_v", 2.0), ("qk_norm", "sum"), ("use_beta", False),
                       ("attn", {"layers": [1], "num_heads": 2})]:  # fmt: skip
        with pytest.raises(ValueError, match=key):
            config_from_fla({**fla, key: value})
    with pytest.raises(ValueError, match="model_type"):
        config_from_fla({**fla, "model_type": "gla"})
    with pytest.raises(ValueError, match="swa"):
        config_to_fla(tiny(layer_types=["deltanet", "swa"], window_size=8))
    with pytest.raises(ValueError, match="use_delta_rule"):
        config_to_fla(tiny(use_delta_rule=False))


def test_convert_refuses_a_non_empty_destination_and_unknown_sources(tmp_path, capsys):
    AssocMemForCausalLM(tiny()).save_pretrained(tmp_path / "ours")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    assert main(["convert", "fla", str(tmp_path / "ours"), str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "taken" / "x").read_text() == "keep me"
    assert main(["convert", "fla", str(tmp_path / "nowhere"), str(tmp_path / "new")]) == 2
    assert "config.json" in capsys.readouterr().err and not (tmp_path / "new").exists()


@pytest.mark.skipif(importlib.util.find_spec("fla") is None, reason="flash-linear-attention is not installed")
def test_fla_model_and_ours_give_the_same_logits_after_conversion(tmp_path, monkeypatch):
    import os

    if not torch.cuda.is_available():
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("fla's kernels need CUDA or the Triton interpreter")
        # The interpreter cannot time fla's autotuned kernels: take each kernel's first configuration.
        import triton.runtime.autotuner as autotuner

        def first_config_wins(self, *args, config=None, **kwargs):
            return [0.0] * 3 if config is self.configs[0] else [1.0] * 3

        monkeypatch.setattr(autotuner.Autotuner, "_bench", first_config_wins)
    from fla.models import DeltaNetConfig, DeltaNetForCausalLM

    torch.manual_seed(0)
    # fused_recurrent: fla's chunk kernels take no float32; the plain norms and MLP keep it to fla's model code.
    plain = dict(fuse_norm=False, fuse_swiglu=False, fuse_cross_entropy=False)
    cfg = DeltaNetConfig(vocab_size=97, hidden_size=64, num_heads=2, num_hidden_layers=2, intermediate_size=96,
                         attn_mode="fused_recurrent", **plain)  # fmt: skip
    fla_model = DeltaNetForCausalLM(cfg).eval()
    with torch.no_grad():  # fla leaves its norm weights at one: make them matter
        for name, p in fla_model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    fla_model.save_pretrained(tmp_path / "fla")
    assert main(["convert", "fla", str(tmp_path / "fla"), str(tmp_path / "ours")]) == 0
    ours = AssocMemForCausalLM.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, 97, (1, 40))
    with torch.no_grad():
        ref = fla_model(ids).logits.float()
        got = ours(ids).logits.float()
    assert rel_err(got, ref) < 1e-4
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
