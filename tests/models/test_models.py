"""Language models: presets, cached generation, padding/packing, Hugging Face round trips, learning."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from assocmem.models import (
    PRESETS,
    AssocMemConfig,
    AssocMemForCausalLM,
    parameter_count_formula,
    preset_config,
)
from assocmem.models.presets import ARCHITECTURES

TINY = [f"{arch}-tiny" for arch in ARCHITECTURES]


def tiny_model(name, **overrides) -> AssocMemForCausalLM:
    torch.manual_seed(0)
    return AssocMemForCausalLM(preset_config(name, **overrides)).eval()


@pytest.mark.parametrize("name", TINY)
def test_cached_decoding_equals_full_forward(name):
    model = tiny_model(name)
    ids = torch.randint(0, 512, (2, 40))  # longer than the tiny window (16)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :11], use_cache=True)
        steps, cache = [out.logits], out.cache
        for t in range(11, 40):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            steps.append(out.logits)
            assert out.cache is cache and cache.seen_tokens == t + 1
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-4


@pytest.mark.parametrize("name", TINY)
def test_generate_greedy_and_sampling_match_full_forward(name):
    model = tiny_model(name)
    prompt = torch.randint(0, 512, (2, 7))
    with torch.no_grad():
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                   do_sample=False, pad_token_id=0)
        ids = prompt
        for _ in range(12):  # greedy by full forward passes, no cache
            next_id = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], 1)
        assert torch.equal(generated, ids)
        sampled = []
        for use_cache in (True, False):
            torch.manual_seed(123)
            sampled.append(model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                          do_sample=True, top_k=0, temperature=1.5, use_cache=use_cache,
                                          pad_token_id=0))
        assert torch.equal(sampled[0], sampled[1])
        assert not torch.equal(sampled[0], generated)  # sampling at temperature 1.5 strays from greedy


@pytest.mark.parametrize("name", TINY)
def test_left_padded_generation_equals_unpadded(name):
    model = tiny_model(name)
    short, long = torch.randint(1, 512, (1, 4)), torch.randint(1, 512, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short], 1), long])
    mask = (torch.arange(9) >= torch.tensor([[5], [0]])).long()
    with torch.no_grad():
        together = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        for row, prompt in enumerate((short, long)):
            alone = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                                   do_sample=False, pad_token_id=0)
            assert torch.equal(together[row, -6:], alone[0, -6:])


@pytest.mark.parametrize("name", TINY)
def test_padded_batch_equals_packed_equals_one_by_one(name):
    model = tiny_model(name)
    lengths = [6, 23, 1, 14]
    seqs = [torch.randint(0, 512, (1, n)) for n in lengths]
    with torch.no_grad():
        alone = [model(s, use_cache=False).logits[0] for s in seqs]
        cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
        packed = model(torch.cat(seqs, 1), cu_seqlens=cu, use_cache=False).logits[0]
        assert (packed - torch.cat(alone)).abs().max() < 1e-4
        T = max(lengths)
        for side in ("left", "right"):
            ids, mask = torch.full((len(seqs), T), 7), torch.zeros(len(seqs), T, dtype=torch.long)
            for i, s in enumerate(seqs):
                span = slice(T - lengths[i], T) if side == "left" else slice(0, lengths[i])
                ids[i, span], mask[i, span] = s[0], 1
            logits = model(ids, attention_mask=mask, use_cache=False).logits
            for i in range(len(seqs)):
                span = slice(T - lengths[i], T) if side == "left" else slice(0, lengths[i])
                assert (logits[i, span] - alone[i]).abs().max() < 1e-4, side


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model("deltanet-swa-tiny", use_output_gate=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, AssocMemConfig) and config.window_size == 16
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, AssocMemForCausalLM)
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    ids = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_tied_embeddings_share_one_matrix(tmp_path):
    model = tiny_model("deltanet-tiny", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == parameter_count_formula(model.config)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


@pytest.mark.parametrize("name", TINY)
def test_loss_falls_on_a_fixed_batch(name):
    model = tiny_model(name).train()
    batch = torch.randint(0, 512, (4, 48))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 5.5  # about log(512) = 6.24 at the start
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("name", PRESETS)
def test_parameter_count_matches_formula(name):
    config = preset_config(name)
    with torch.device("meta"):
        model = AssocMemForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == parameter_count_formula(config)


def test_paper_sizes():
    for arch in ARCHITECTURES:
        c340, c13 = preset_config(f"{arch}-340m"), preset_config(f"{arch}-1.3b")
        assert (c340.hidden_size, c340.num_hidden_layers, c340.head_dim) == (1024, 24, 128)
        assert (c13.hidden_size, c13.num_hidden_layers, c13.head_dim) == (2048, 24, 128)
    assert 3.0e8 < parameter_count_formula(preset_config("deltanet-340m")) < 4.0e8
    assert 1.2e9 < parameter_count_formula(preset_config("transformer++-1.3b")) < 1.5e9


def test_layer_schedules():
    assert preset_config("deltanet-swa-340m").mixer_types[:4] == ["deltanet", "swa", "deltanet", "swa"]
    types = preset_config("deltanet-2attn-340m").mixer_types
    assert [i for i, t in enumerate(types) if t == "attention"] == [1, 12]  # layers 2 and N/2 + 1
    assert set(preset_config("transformer++-tiny").mixer_types) == {"attention"}


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"layer_types": ["deltanet", "mamba"]}, "layer_types entries"),
        ({"hidden_size": 100, "num_heads": 8}, "must divide hidden_size"),
        ({"layer_types": ["swa"], "window_size": 0}, "window_size must be a positive"),
        ({"layer_types": ["swa"], "window_size": -3}, "window_size must be a positive"),
        ({"layer_types": ["swa"]}, "window_size must be set"),
        ({"num_kv_heads": 3}, "num_kv_heads"),
        ({"hiden_size": 64}, "unknown key"),
        ({"delta_rule_backend": "cuda"}, "delta_rule_backend"),
        ({"layer_types": []}, "at least one layer"),
    ],
)
def test_bad_configs_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        AssocMemConfig(**bad)


def test_bad_model_inputs_and_presets():
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("deltanet-huge")
    model = tiny_model("deltanet-2attn-tiny")
    ids = torch.randint(0, 512, (2, 8))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ids, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="batch size 1"):
        model(ids, cu_seqlens=torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="offsets from 0 to T"):
        model(ids[:1], cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="exactly one of"):
        model.model()
