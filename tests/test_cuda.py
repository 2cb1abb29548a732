"""Checks on a CUDA device (run on the GPU machine by scripts/gpu_check.sh; skipped where there is none)."""

import pytest
import torch

from assocmem import delta_rule
from assocmem.ops.delta_rule import naive_delta_rule
from assocmem.ops.hopfield import retrieve
from assocmem.ops.hopfield.naive import naive_retrieve

from .ops.helpers import make_inputs, rel_err

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T, K, V", [(2048, 128, 128), (1000, 64, 100)])
def test_chunk_on_cuda_matches_naive(dtype, T, K, V):
    inputs = make_inputs(2, T, 4, K, V, dtype)
    q, k, v, beta, h0 = inputs
    o_ref, s_ref = naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
    o_low, _ = naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, compute_dtype=dtype)
    cuda = [x.cuda() for x in inputs]
    o, s = delta_rule(*cuda[:4], initial_state=cuda[4], output_final_state=True, backend="chunk")
    limit = 1e-5 if dtype == torch.float32 else max(2 * rel_err(o_low, o_ref), 1e-3)
    assert rel_err(o.cpu(), o_ref) < limit
    assert rel_err(s.cpu(), s_ref) < max(limit, 1e-5)


def test_chunk_on_cuda_long_sequence_is_finite():
    q, k, v, beta, _ = make_inputs(1, 65536, 2, 128, 128, torch.bfloat16, state=False)
    o, s = delta_rule(q.cuda(), k.cuda(), v.cuda(), beta.cuda(), output_final_state=True, backend="chunk")
    assert torch.isfinite(o).all() and torch.isfinite(s).all()


def test_hopfield_retrieve_on_cuda_matches_materialised():
    xi, X, Xv = (torch.randn(2, 512, 4, 64, device="cuda") for _ in range(3))
    out = retrieve(xi, X, Xv, beta=0.125, steps=3)
    ref = naive_retrieve(xi, X, Xv, beta=0.125, steps=3)
    assert rel_err(out, ref) < 1e-4


@pytest.mark.parametrize("name", ["deltanet-tiny", "transformer++-tiny", "deltanet-swa-tiny", "deltanet-2attn-tiny"])
def test_models_on_cuda_match_cpu_and_decode_from_cache(name):
    from assocmem.models import AssocMemForCausalLM, preset_config

    torch.manual_seed(0)
    cpu_model = AssocMemForCausalLM(preset_config(name)).eval()
    model = AssocMemForCausalLM(preset_config(name)).eval()
    model.load_state_dict(cpu_model.state_dict())
    model.cuda()
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        ref = cpu_model(ids, use_cache=False).logits
        full = model(ids.cuda(), use_cache=False).logits
        assert rel_err(full.cpu(), ref) < 1e-4
        out = model(ids[:, :17].cuda(), use_cache=True)
        steps = [out.logits]
        for t in range(17, 40):
            out = model(ids[:, t : t + 1].cuda(), cache=out.cache, use_cache=True)
            steps.append(out.logits)
        assert (torch.cat(steps, 1) - full).abs().max() < 1e-4
        generated = model.generate(ids[:, :5].cuda(), attention_mask=torch.ones(2, 5, device="cuda"),
                                   max_new_tokens=8, do_sample=False, pad_token_id=0)
        expected = cpu_model.generate(ids[:, :5], attention_mask=torch.ones(2, 5), max_new_tokens=8,
                                      do_sample=False, pad_token_id=0)
        assert torch.equal(generated.cpu(), expected)
        # bfloat16 on the GPU: at most twice the error of the same model in bfloat16 on the CPU.
        cpu_bf16 = cpu_model.to(torch.bfloat16)(ids, use_cache=False).logits.float()
        bf16 = model.to(torch.bfloat16)(ids.cuda(), use_cache=False).logits.float()
        assert rel_err(bf16.cpu(), ref) <= 2 * rel_err(cpu_bf16, ref)
