"""Checks on a CUDA device (run on the GPU machine by scripts/gpu_check.sh; skipped where there is none)."""

import importlib.util

import pytest
import torch

from assocmem import delta_rule
from assocmem.ops.delta_rule import naive_delta_rule
from assocmem.ops.hopfield import retrieve
from assocmem.ops.hopfield.naive import naive_retrieve

from .ops.helpers import grads, leaves, make_inputs, rel_err

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


@pytest.mark.parametrize("name", ["deltanet-tiny", "transformer++-tiny"])
def test_models_on_cuda_under_torch_compile_train_as_eager(name):
    """A training step compiled (the trainer's compile = true) gives the eager loss and every parameter's
    gradient, float32: torch 2.11 compiled one of our memory-saving autograd functions to a zero gradient here,
    so under compile they give way to their plain forms."""
    from assocmem.models import AssocMemForCausalLM, preset_config

    torch.manual_seed(0)
    model = AssocMemForCausalLM(preset_config(name)).cuda()
    ids = torch.randint(0, 512, (2, 70), device="cuda")
    results = []
    for run in (model, torch.compile(model)):
        model.zero_grad(set_to_none=True)
        loss = run(ids, labels=ids, use_cache=False).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_eager, eager), (loss_compiled, compiled) = results
    assert rel_err(loss_compiled, loss_eager) < 1e-5
    for n, g in eager.items():
        assert g.norm() > 0, n
        assert rel_err(compiled[n], g) < 1e-3, n


# The Triton kernels at full shapes (the interpreter runs them on the CPU at small ones).

FWD_CASES = [
    (torch.float32, (2, 2048, 4, 128, 128)),
    (torch.bfloat16, (2, 2048, 4, 128, 128)),
    (torch.float16, (2, 1000, 3, 64, 100)),
    (torch.bfloat16, (1, 512, 2, 128, 64)),
    (torch.float32, (2, 300, 2, 16, 32)),
    (torch.bfloat16, (1, 300, 2, 256, 256)),
    (torch.float32, (1, 200, 1, 256, 64)),
]


@pytest.mark.parametrize("dtype, shape", FWD_CASES)
def test_triton_on_cuda_matches_naive(dtype, shape):
    B, T, H, K, V = shape
    # The references run on the GPU too (token by token; on a busy host's CPU the largest took minutes).
    assert not torch.backends.cuda.matmul.allow_tf32  # the float32 reference must be float32
    q, k, v, beta, h0 = cuda = [x.cuda() for x in make_inputs(B, T, H, K, V, dtype)]
    o_ref, s_ref = naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
    o_low, s_low = naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, compute_dtype=dtype)
    o, s = delta_rule(*cuda[:4], initial_state=cuda[4], output_final_state=True, backend="triton")
    assert o.dtype == dtype and s.dtype == torch.float32
    if dtype == torch.float32:
        assert rel_err(o, o_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5
    else:
        assert rel_err(o, o_ref) <= 2 * rel_err(o_low, o_ref) and rel_err(o, o_ref) < 1e-2
        assert rel_err(s, s_ref) <= 2 * rel_err(s_low, s_ref)


GRAD_CASES = [
    (torch.float32, (1, 512, 2, 128, 128)),
    (torch.bfloat16, (1, 512, 2, 128, 128)),
    (torch.bfloat16, (1, 300, 2, 64, 128)),
    (torch.float16, (2, 130, 2, 32, 100)),
    (torch.bfloat16, (1, 300, 2, 256, 256)),
    (torch.float32, (1, 200, 1, 256, 128)),
]


@pytest.mark.parametrize("dtype, shape", GRAD_CASES)
def test_triton_gradients_on_cuda(dtype, shape):
    check_gradients_on_cuda(dtype, shape)


@pytest.mark.parametrize("dtype, shape", [(torch.bfloat16, (1, 512, 2, 128, 128)), (torch.float32, (1, 300, 2, 64, 64)),
                                          (torch.float16, (2, 130, 2, 32, 100))])  # fmt: skip
def test_triton_fused_wy_backward_on_cuda(dtype, shape, monkeypatch):
    """chunk.FUSED_WY_BWD (dqkw and wy_bwd as one kernel) on the GPU: the same bounds as the two kernels."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {16: True, 32: True, 64: True, 128: True})
    assert tchunk._fused_wy_bwd(shape[3], dtype)
    check_gradients_on_cuda(dtype, shape)


@pytest.mark.parametrize("shape", [(2, 2048, 4, 128, 128), (1, 300, 2, 64, 100)])
def test_triton_training_forward_with_q_in_one_buffer_on_cuda(shape, monkeypatch):
    """chunk.TRAIN_STATE_FWD (2 stages, Q in one shared-memory buffer: two blocks per SM at K = 128; the default
    where programs are many, forced here at small shapes) on the GPU: the training forward's output equals the
    3-stage pass's bit for bit (the same products in the same order), and the gradients keep the bf16 bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    q, k, v, beta, h0 = (x.cuda().requires_grad_() for x in make_inputs(*shape, torch.bfloat16))
    monkeypatch.setattr(tchunk, "TRAIN_STATE_FWD", {})
    base = delta_rule(q, k, v, beta, initial_state=h0, backend="triton")[0]
    monkeypatch.setattr(tchunk, "TRAIN_STATE_FWD", {tchunk._width(shape[3]): {"num_stages": 2, "q_one_buffer": True}})
    monkeypatch.setattr(tchunk, "TRAIN_MANY_PROGRAMS", 0)
    assert tchunk._state_fwd_launch(shape[3], torch.bfloat16, 1, q.device, False, True)["Q_ONE_BUFFER"]
    one_buffer = delta_rule(q, k, v, beta, initial_state=h0, backend="triton")[0]
    assert torch.equal(base, one_buffer)
    check_gradients_on_cuda(torch.bfloat16, shape)


PIPELINE_CASES = [(torch.bfloat16, (2, 2048, 4, 128, 128)), (torch.float32, (1, 700, 2, 64, 64)),
                  (torch.bfloat16, (1, 1000, 2, 256, 256)), (torch.bfloat16, (2, 1500, 4, 64, 64))]


@pytest.mark.parametrize("split", ["fused", "split", "wu_split", "wu"])
@pytest.mark.parametrize("dtype, shape", PIPELINE_CASES)
def test_triton_pipelined_forward_on_cuda(dtype, shape, split, monkeypatch):
    """chunk.PIPELINE and PIPELINE_BWD (WY forward segments on a second stream while the state pass walks the
    segments before them; each segment's dqkw and WY backward there while the reverse pass walks the one before)
    on the GPU, with or without PIPELINE_SPLIT_OUTPUT (each segment's output on the second stream while the
    state pass walks the next) and PIPELINE_WU (the pass from W and U, the output by output_kernel or in the
    pass): output, final state and gradients within the unsegmented kernels' bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "PIPELINE_SPLIT_OUTPUT", split in ("split", "wu_split"))
    monkeypatch.setattr(tchunk, "PIPELINE_WU", split.startswith("wu"))
    monkeypatch.setattr(tchunk, "PIPELINE_WU_MAX_K", 256)  # (off at 256 by default, untimed there)
    monkeypatch.setattr(tchunk, "PIPELINE", "1")
    monkeypatch.setattr(tchunk, "PIPELINE_BWD", True)
    monkeypatch.setattr(tchunk, "PIPELINE_SEGMENTS", 4)
    B, T, H, K, V = shape
    chunks = tchunk._Chunks(B, T, None)
    assert tchunk._pipeline_segments(torch.empty(B, T, H, K, device="cuda"), torch.empty(B, T, H, V), chunks, 64) > 1
    test_triton_on_cuda_matches_naive(dtype, shape)
    check_gradients_on_cuda(dtype, shape)


REVERSE_W_CASES = [(torch.bfloat16, (2, 2048, 4, 128, 128)), (torch.float32, (1, 700, 2, 64, 64)),
                   (torch.bfloat16, (1, 300, 2, 64, 128)), (torch.float16, (2, 130, 2, 32, 100))]


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("dtype, shape", REVERSE_W_CASES)
def test_triton_reverse_pass_from_w_on_cuda(dtype, shape, pipelined, monkeypatch):
    """chunk.REVERSE_FROM_W (W = A beta K by w_kernel, the reverse pass's W^T dV' from it), with and without the
    backward's pipeline (four segments forced): gradients within the bounds on the GPU."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "REVERSE_FROM_W", True)
    monkeypatch.setattr(tchunk, "REVERSE_FROM_W_MIN_K", 16)  # (128 only by default)
    monkeypatch.setattr(tchunk, "PIPELINE", "1" if pipelined else "0")
    monkeypatch.setattr(tchunk, "PIPELINE_SEGMENTS", 4)
    check_gradients_on_cuda(dtype, shape)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("shape", [(1, 512, 2, 128, 128), (1, 300, 2, 64, 128)])
def test_triton_backward_bf16_options_on_cuda(shape, fused, monkeypatch):
    """Every bf16 choice of the backward the sweep may take — dqkw's and wy_bwd's operand bits, the
    recomputing and reverse state passes' bits, V' and dV' stored in bf16, two kernels or fused — at once: the gradients
    within the bf16 bounds on the GPU."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_OPERANDS",
                        {**tchunk.HALF_OPERANDS, "dqkw": 15, "wy_bwd": 15, "state_recompute": 7, "state_bwd": 3})
    monkeypatch.setattr(tchunk, "HALF_VPRIME", True)
    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {64: fused, 128: fused})
    check_gradients_on_cuda(torch.bfloat16, shape)


@pytest.mark.parametrize("shape", [(1, 512, 2, 128, 128), (1, 300, 2, 64, 100), (1, 200, 2, 256, 256)])
def test_triton_version12_options_on_cuda(shape, monkeypatch):
    """Version 12's options at once (A, dW and dK's part in bf16) with every bf16 operand bit and V' in bf16,
    states recomputed: gradients within the bf16 bounds on the GPU."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_OPERANDS",
                        {"state_fwd": 7, "state_recompute": 7, "state_bwd": 3, "dqkw": 15, "wy_bwd": 15})
    for name in ("HALF_A", "HALF_DW", "HALF_VPRIME"):
        monkeypatch.setattr(tchunk, name, True)
    monkeypatch.setattr(tchunk, "KEEP_STATES", False)
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    check_gradients_on_cuda(torch.bfloat16, shape)


@pytest.mark.parametrize("shape", [(1, 512, 2, 128, 128), (2, 300, 2, 64, 100), (1, 200, 2, 256, 256)])
def test_triton_split_output_on_cuda(shape, monkeypatch):
    """chunk.SPLIT_OUTPUT (the state pass without the output, then a parallel output kernel) on the GPU: the
    gradients within the bf16 bounds, and the output as the fused forward's."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    q, k, v, beta, h0 = (x.cuda() for x in make_inputs(*shape, torch.bfloat16))
    fused = delta_rule(q, k, v, beta, initial_state=h0, backend="triton")[0]
    monkeypatch.setattr(tchunk, "SPLIT_OUTPUT", "1")
    split = delta_rule(q, k, v, beta, initial_state=h0, backend="triton")[0]
    assert rel_err(split.float(), fused.float()) < 1e-2
    check_gradients_on_cuda(torch.bfloat16, shape)


@pytest.mark.parametrize("store", ["0", "1"])
@pytest.mark.parametrize("shape", [(1, 512, 2, 128, 128), (2, 300, 2, 64, 100), (1, 200, 2, 256, 256)])
def test_triton_stored_p_on_cuda(shape, store, monkeypatch):
    """chunk.STORE_P (P = scale tril(Q K^T) stored by the WY forward, read by the state passes)
    on and off, for training and inference: outputs and gradients within the bounds on the GPU, in bf16 and
    float32 (against naive.py), with the split forward too."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "STORE_P", {"train": store, "infer": store})
    check_gradients_on_cuda(torch.bfloat16, shape)
    check_gradients_on_cuda(torch.float32, shape)
    monkeypatch.setattr(tchunk, "SPLIT_OUTPUT", "1")
    check_gradients_on_cuda(torch.bfloat16, shape)
    check_fp32_inference_on_cuda(shape)


@pytest.mark.parametrize("shape", [(1, 128, 2, 64, 32), (1, 64, 1, 128, 16), (2, 100, 2, 32, 16), (1, 130, 1, 16, 128)])
def test_triton_small_heads_bf16_gradients_on_cuda(shape):
    """Heads under 64 wide in bf16 (padded to 64-wide tiles: chunk.MIN_TILE; with tiles of 16 and 32 Triton 3.6
    gave dV and dbeta off by more than 100 % here): gradients within the bf16 bounds."""
    check_gradients_on_cuda(torch.bfloat16, shape)


def test_triton_wide_state_tile_at_k256_on_cuda():
    """The forward's 64-wide state tile at K = 256 (bf16, taken where the programs fill the SMs, and by a
    forward that keeps nothing at any number of programs): output, state and gradients within the bf16 bounds;
    the inference forward at few programs against the float32 path."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    shape = (1, 200, 36, 256, 256)
    assert tchunk._state_tile_v(256, 256, "state_fwd", torch.bfloat16, 36, torch.device("cuda")) == 64
    check_gradients_on_cuda(torch.bfloat16, shape)
    assert tchunk._state_tile_v(256, 256, "state_fwd", torch.bfloat16, 2, torch.device("cuda"), keeps=False) == 64
    q, k, v, beta, h0 = (x.cuda() for x in make_inputs(1, 1000, 2, 256, 256, torch.bfloat16))
    with torch.no_grad():
        o, s = delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, backend="triton")
        o_ref, s_ref = delta_rule(q.float(), k.float(), v.float(), beta.float(), initial_state=h0.float(),
                                  output_final_state=True, backend="chunk")  # fmt: skip
    assert rel_err(o.float(), o_ref) < 1e-2 and rel_err(s, s_ref) < 1e-2


def check_fp32_inference_on_cuda(shape):
    """A float32 inference forward (no gradients: the forward that keeps nothing) against naive.py at 1e-5."""
    q, k, v, beta, h0 = (x.cuda() for x in make_inputs(*shape, torch.float32))
    o_ref, s_ref = naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
    with torch.no_grad():
        o, s = delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, backend="triton")
    assert rel_err(o, o_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5


def check_gradients_on_cuda(dtype, shape):
    B, T, H, K, V = shape
    inputs = make_inputs(B, T, H, K, V, dtype)
    do, dstate = torch.randn(B, T, H, V), torch.randn(B, H, K, V)

    def naive(*x, **kw):
        return naive_delta_rule(*x[:4], initial_state=x[4], output_final_state=True, **kw)

    def triton(*x):
        return delta_rule(*x[:4], initial_state=x[4], output_final_state=True, backend="triton")

    # The references run on the GPU too (token by token; on the CPU the largest cases took minutes).
    inputs, do, dstate = [x.cuda() for x in inputs], do.cuda(), dstate.cuda()
    assert not torch.backends.cuda.matmul.allow_tf32  # the float32 reference must be float32
    _, _, g_ref = grads(naive, leaves(*inputs), do, dstate)
    _, _, g_low = grads(lambda *x: naive(*x, compute_dtype=dtype), leaves(*inputs), do, dstate)
    _, _, g = grads(triton, leaves(*inputs), do, dstate)
    for name, a, low, ref in zip(["q", "k", "v", "beta", "initial_state"], g, g_low, g_ref):
        err = rel_err(a, ref)
        if dtype == torch.float32:
            assert err < 1e-5, name
        else:
            assert err <= 2 * rel_err(low, ref) and err < 1e-2, name


def test_triton_above_head_size_256_is_refused_and_auto_uses_chunk():
    q, k, v, beta, _ = (None if x is None else x.cuda() for x in make_inputs(1, 70, 1, 320, 32, state=False))
    with pytest.raises(ValueError, match="head sizes up to 256"):
        delta_rule(q, k, v, beta, backend="triton")
    o, _ = delta_rule(q, k, v, beta)
    o_ref, _ = naive_delta_rule(q.cpu(), k.cpu(), v.cpu(), beta.cpu())
    assert rel_err(o.cpu(), o_ref) < 1e-5


def test_triton_packed_on_cuda_equals_one_by_one():
    lengths = [1, 63, 64, 65, 1000, 0, 2047]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), device="cuda")
    q, k, v, beta, h0 = (x.cuda() for x in make_inputs(1, sum(lengths), 2, 64, 64, N=len(lengths)))
    xs = leaves(q, k, v, beta, h0)
    o, s = delta_rule(*xs[:4], initial_state=xs[4], output_final_state=True, cu_seqlens=cu, backend="triton")
    (o.square().sum() + s.square().sum()).backward()
    bounds = cu.tolist()
    for n in range(len(lengths)):
        a, b = bounds[n], bounds[n + 1]
        ys = leaves(q[:, a:b], k[:, a:b], v[:, a:b], beta[:, a:b], h0[n : n + 1])
        o1, s1 = delta_rule(*ys[:4], initial_state=ys[4], output_final_state=True, backend="triton")
        (o1.square().sum() + s1.square().sum()).backward()
        if b > a:
            assert rel_err(o[:, a:b], o1) < 1e-5
            for x, y in zip(xs[:4], ys[:4]):
                assert rel_err(x.grad[:, a:b], y.grad) < 1e-5
        assert rel_err(s[n], s1[0]) < 1e-5 and rel_err(xs[4].grad[n], ys[4].grad[0]) < 1e-5


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_triton_on_the_second_gpu_equals_the_first():
    """Kernels launch on their inputs' device, not the current one (which stays cuda:0)."""
    inputs = make_inputs(2, 200, 2, 64, 64, torch.bfloat16)
    results = []
    for device in ("cuda:0", "cuda:1"):
        xs = leaves(*[x.to(device) for x in inputs])
        o, s = delta_rule(*xs[:4], initial_state=xs[4], output_final_state=True, backend="triton")
        (o.float().square().sum() + s.square().sum()).backward()
        assert o.device == torch.device(device) and xs[0].grad.device == torch.device(device)
        results.append([o.cpu(), s.cpu()] + [x.grad.cpu() for x in xs])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_triton_long_sequence_is_finite():
    q, k, v, beta, _ = (None if x is None else x.cuda().requires_grad_() for x in
                        make_inputs(1, 65536, 2, 128, 128, torch.bfloat16, state=False))  # fmt: skip
    o, s = delta_rule(q, k, v, beta, output_final_state=True, backend="triton")
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    o.float().square().mean().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v, beta))


@pytest.mark.parametrize("shape", [(2, 200, 2, 64, 64), (2, 128, 64, 128, 128)])
def test_triton_under_torch_compile(shape):
    """One graph (fullgraph) equals eager; the second shape's inference forward has programs enough for the
    fewer pipeline stages (chunk.INFER_STAGES), whose rule asks for the device's SM count while tracing."""
    q, k, v, beta, h0 = (x.cuda() for x in make_inputs(*shape, torch.bfloat16))

    def f(q, k, v, beta):
        return delta_rule(q, k, v, beta, initial_state=h0, backend="triton")[0].float().square().sum()

    eager = f(q, k, v, beta)
    compiled = torch.compile(f, fullgraph=True)(q, k, v, beta)
    assert rel_err(compiled, eager) < 1e-6


def _fla_delta_rule_mode(model, mode):
    """Sets every fla DeltaNet layer's kernel: "chunk" (its default; bf16 and fp16 only) or
    "fused_recurrent" (token by token, also float32)."""
    for module in model.modules():
        if getattr(module, "mode", None) in ("chunk", "fused_recurrent"):
            module.mode = mode
    return model


def test_fla_checkpoint_converted_gives_the_same_logits_and_greedy_tokens(tmp_path):
    """fla's DeltaNet model (its own kernels, fused norms) on the GPU against ours after `assocmem convert
    fla`. fla's chunk kernel refuses float32, so its float32 reference runs its fused recurrent kernel. In
    float32: the same logits (a wrong weight mapping is an O(1) error) and the same greedy continuation.
    In bf16 (fla's chunk kernel, ours by default): ours no further from that reference than fla's own bf16
    model (two bf16 models differ from each other by about twice that: 3.0e-2 at these shapes)."""
    if importlib.util.find_spec("fla") is None:
        pytest.skip("flash-linear-attention is not installed")
    from fla.models import DeltaNetConfig, DeltaNetForCausalLM

    from assocmem.models import AssocMemForCausalLM
    from assocmem.models.fla_interop import convert

    torch.manual_seed(0)
    cfg = DeltaNetConfig(vocab_size=1000, hidden_size=256, num_heads=4, num_hidden_layers=4)
    fla_model = DeltaNetForCausalLM(cfg).to("cuda").eval()
    fla_model.save_pretrained(tmp_path / "fla")
    convert(tmp_path / "fla", tmp_path / "ours")
    ours = AssocMemForCausalLM.from_pretrained(tmp_path / "ours").to("cuda").eval()
    assert next(ours.parameters()).dtype == torch.float32
    ids = torch.randint(0, 1000, (2, 300), device="cuda")
    with torch.no_grad():
        ref = _fla_delta_rule_mode(fla_model, "fused_recurrent")(ids).logits
        assert rel_err(ours(ids).logits, ref) < 2e-3
        prompt = ids[:, :100]
        fla_tokens = fla_model.generate(prompt, max_new_tokens=16, do_sample=False)
        our_tokens = ours.generate(prompt, max_new_tokens=16, do_sample=False)
        assert torch.equal(fla_tokens, our_tokens)
        fla_bf16 = _fla_delta_rule_mode(fla_model.to(torch.bfloat16), "chunk")(ids).logits.float()
        ours_bf16 = ours.to(torch.bfloat16)(ids).logits.float()
    fla_error, our_error = rel_err(fla_bf16, ref), rel_err(ours_bf16, ref)
    print(f"bf16 logits against fla's float32 ones: fla {fla_error:.2e}, ours {our_error:.2e}")
    assert our_error < 1.5 * fla_error + 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_short_conv_on_cuda_matches_the_specification(dtype):
    """ops.short_conv's Triton kernels at a model's shape (8 x 2048 x 1024, W = 4) and with
    packed sequences: output, dx and dweight against the float32 shifted-sum form, within the specification's
    own low-precision error (or 1e-5 in float32)."""
    from assocmem.modules.conv import positions_in_sequence
    from assocmem.ops.short_conv import short_conv

    g = torch.Generator().manual_seed(0)
    x, dy = torch.randn(8, 2048, 1024, generator=g).cuda(), torch.randn(8, 2048, 1024, generator=g).cuda()
    w = (torch.randn(1024, 4, generator=g) / 2).cuda()
    positions = positions_in_sequence(torch.tensor([0, 5, 900, 2048]).cuda(), 2048)

    def run(backend, xs, ws, dys, pos=None):
        xs, ws = xs.detach().clone().requires_grad_(), ws.detach().clone().requires_grad_()
        y = short_conv(xs, ws, None, pos, "silu", backend)
        y.backward(dys)
        return [t.double() for t in (y.detach(), xs.grad, ws.grad)]

    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    for pos, n in ((None, 8), (positions, 1)):
        exact = run("torch", x[:n], w, dy[:n], pos)
        spec = run("torch", x[:n].to(dtype), w.to(dtype), dy[:n].to(dtype), pos)
        ours = run("triton", x[:n].to(dtype), w.to(dtype), dy[:n].to(dtype), pos)
        for name, a, s, e in zip(("y", "dx", "dw"), ours, spec, exact):
            limit = 1e-5 if dtype == torch.float32 else max(rel(s, e), 2e-3)
            assert rel(a, e) <= limit, (name, pos is not None)
