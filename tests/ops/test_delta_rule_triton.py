"""The Triton kernels against the step-by-step specification (naive.py), on the op's invariants.

On a machine without a GPU they run on the CPU under the Triton interpreter (TRITON_INTERPRET=1, set by
conftest.py before anything imports Triton), at small shapes; on a GPU at the same shapes (the full-size
checks are in tests/test_cuda.py). Skipped only where Triton is not installed.
"""

import importlib.util

import pytest
import torch

from assocmem import delta_rule
from assocmem.ops.delta_rule import delta_rule_step, l2_normalize, naive_delta_rule

from .helpers import grads, leaves, make_inputs, rel_err

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _teach_the_interpreter_bfloat16():
    """Make Triton's interpreter treat bfloat16 as the GPU does (checked by a test below):
    - it keeps bfloat16 as raw uint16 and multiplies those integers in tl.dot (a 16x16 bf16 product comes
      out off by 1e10): bf16 operands are widened to float32 first, exact, as on tensor cores;
    - it converts float32 to bfloat16 by truncating the mantissa, where the GPU rounds to nearest even:
      truncation doubles the rounding error, so every bf16 rounding inside a kernel (HALF_OPERANDS, bf16
      outputs) looked twice as costly under the interpreter as on the H200. Casts round to nearest even."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "_widens_bf16", False):
        return
    original_dot, original_cast = builder.create_dot, builder.cast_impl

    def widen(handle):
        if handle.dtype.scalar == tl.bfloat16:
            data = (handle.data.astype(np.uint32) << 16).view(np.float32)
            return interpreter.TensorHandle(data, tl.float32)
        return handle

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        return original_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            data = np.asarray(src.data, dtype=np.float32)
            bits = data.view(np.uint32)
            rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
            rounded = np.where(np.isnan(data), np.uint16(0x7FC0), rounded)
            return interpreter.TensorHandle(rounded, tl.bfloat16)
        return original_cast(self, src, dst_type)

    create_dot._widens_bf16 = True
    builder.create_dot = create_dot
    builder.cast_impl = cast_impl


if DEVICE.type == "cpu" and importlib.util.find_spec("triton") is not None:
    _teach_the_interpreter_bfloat16()
NAMES = ["q", "k", "v", "beta", "initial_state"]


def on_device(xs):
    return [None if x is None else x.to(DEVICE) for x in xs]


def run(backend, **kw):
    def fn(q, k, v, beta, h0):
        return delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, backend=backend, **kw)

    return fn


def naive(q, k, v, beta, h0, **kw):
    return naive_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True, **kw)


def check_fp32(backend, B, T, H, K, V, cu_seqlens=None):
    N = B if cu_seqlens is None else len(cu_seqlens) - 1
    inputs = make_inputs(B, T, H, K, V, N=N)
    do, dstate = torch.randn(B, T, H, V), torch.randn(N, H, K, V)
    o_ref, s_ref, g_ref = grads(lambda *x: naive(*x, cu_seqlens=cu_seqlens), leaves(*inputs), do, dstate)
    cu = None if cu_seqlens is None else cu_seqlens.to(DEVICE)
    o, s, g = grads(run(backend, cu_seqlens=cu), leaves(*on_device(inputs)), do.to(DEVICE), dstate.to(DEVICE))
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert rel_err(o.cpu(), o_ref) < 1e-5
    assert rel_err(s.cpu(), s_ref) < 1e-5
    for name, a, b in zip(NAMES, g, g_ref):
        assert rel_err(a.cpu(), b) < 1e-5, name


@pytest.mark.parametrize(
    "B, T, H, K, V",
    [(2, 100, 2, 32, 16), (1, 63, 1, 60, 100), (1, 130, 1, 16, 128), (1, 64, 1, 128, 16), (1, 70, 1, 256, 40)],
)
def test_chunk_kernels_match_naive_fp32(B, T, H, K, V):
    check_fp32("triton", B, T, H, K, V)


def test_chunk_kernels_on_packed_sequences():
    check_fp32("triton", 1, 140, 2, 32, 16, cu_seqlens=torch.tensor([0, 5, 5, 69, 139, 140]))


@pytest.mark.parametrize("B, T, H, K, V", [(2, 9, 2, 32, 16), (1, 7, 1, 60, 100)])
def test_recurrent_kernels_match_naive_fp32(B, T, H, K, V):
    check_fp32("triton_recurrent", B, T, H, K, V)


def test_recurrent_kernels_on_packed_sequences():
    check_fp32("triton_recurrent", 1, 12, 2, 16, 16, cu_seqlens=torch.tensor([0, 3, 3, 11, 12], dtype=torch.int32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunk_kernels_low_precision_within_twice_the_reference_error(dtype):
    """Against fp32 math on the same rounded inputs; the bound is 2x what naive.py makes in that dtype."""
    check_low_precision(dtype, 1, 128, 2, 64, 32)


def check_low_precision(dtype, B, T, H, K, V):
    inputs = make_inputs(B, T, H, K, V, dtype)
    do, dstate = torch.randn(B, T, H, V), torch.randn(B, H, K, V)
    o_ref, s_ref, g_ref = grads(naive, leaves(*inputs), do, dstate)
    o_low, s_low, g_low = grads(lambda *x: naive(*x, compute_dtype=dtype), leaves(*inputs), do, dstate)
    o, s, g = grads(run("triton"), leaves(*on_device(inputs)), do.to(DEVICE), dstate.to(DEVICE))
    assert o.dtype == dtype and s.dtype == torch.float32
    assert rel_err(o.cpu(), o_ref) <= 2 * rel_err(o_low, o_ref) and rel_err(o.cpu(), o_ref) < 1e-2
    assert rel_err(s.cpu(), s_ref) <= 2 * rel_err(s_low, s_ref)
    for name, a, low, ref, x in zip(NAMES, g, g_low, g_ref, inputs):
        assert a.dtype == x.dtype, name
        assert rel_err(a.cpu(), ref) <= 2 * rel_err(low, ref), name
        assert rel_err(a.cpu(), ref) < 1e-2, name


@pytest.mark.parametrize("V", [32, 64])
@pytest.mark.parametrize("bits", [1, 2 | 4])
def test_forward_bf16_operands_within_twice_the_reference_error(bits, V, monkeypatch):
    """The forward's bf16 operand choices (chunk.HALF_OPERANDS["state_fwd"]; the default and the others the
    sweep may time) keep the output within the low-precision bounds, at value tiles of 32 (where bits 2 and 4
    are dropped: NaN on the H200) and 64; the backward is unaffected."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setitem(tchunk.HALF_OPERANDS, "state_fwd", bits)
    assert tchunk._state_tile_v(64, V) == 64  # V = 32 padded to a 64-wide tile (chunk.MIN_TILE)
    assert tchunk._half_operands("state_fwd", torch.bfloat16, 64, 64) == bits
    assert tchunk._half_operands("state_fwd", torch.bfloat16, 256, tchunk._state_tile_v(256, 256)) == bits & 1
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, V)


@pytest.mark.parametrize("fused", [False, True])
def test_backward_bf16_operands_within_twice_the_reference_error(fused, monkeypatch):
    """Every bf16 operand choice of the backward at once (dqkw's four bits, wy_bwd's four), with dqkw and
    wy_bwd as two kernels and fused, keeps the gradients within the low-precision bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_OPERANDS", {**tchunk.HALF_OPERANDS, "dqkw": 15, "wy_bwd": 15})
    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {64: fused})
    assert tchunk._half_operands("wy_bwd", torch.bfloat16) == 15 and tchunk._half_operands("wy_bwd", torch.float16) == 0
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 64)


def test_inference_forward_takes_fewer_stages_only_where_its_programs_fill_the_sms(monkeypatch):
    """chunk.INFER_STAGES: the forward that keeps nothing takes 2 pipeline stages at K = 128 where its programs
    reach 1.5 per SM (3 elsewhere, in the keeping forward, at K = 64, or where LAUNCH_BY_K sets that kernel's
    launch; float32's one stage stays); its output and final state stay within the bf16 bounds of naive.py where
    the rule applies."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    sms = tchunk._sm_count(DEVICE)
    stages = lambda K, programs, inference, dtype=torch.bfloat16: tchunk._state_fwd_launch(  # noqa: E731
        K, dtype, programs, DEVICE, inference)["num_stages"]
    assert stages(128, 2 * sms, True) == 2 and stages(128, 2 * sms, False) == 3 and stages(128, sms, True) == 3
    assert stages(64, 4 * sms, True) == 3 and stages(128, 4 * sms, True, torch.float32) == 1
    # a launch setting for that kernel and K (a sweep's choice) comes before the rule, so a sweep times what it sets
    monkeypatch.setitem(tchunk.LAUNCH_BY_K, ("state_fwd", 128), {"num_warps": 4, "num_stages": 3})
    assert stages(128, 2 * sms, True) == 3
    monkeypatch.delitem(tchunk.LAUNCH_BY_K, ("state_fwd", 128))
    launches = []
    real = tchunk._state_fwd_launch
    monkeypatch.setattr(tchunk, "_state_fwd_launch", lambda *a: launches.append(real(*a)) or launches[-1])
    B, T, H = (1, 64, 1) if DEVICE.type == "cpu" else (2, 256, 128)
    q, k, v, beta, h0 = make_inputs(B, T, H, 128, 128, torch.bfloat16)
    o_ref, s_ref = naive(q.float(), k.float(), v.float(), beta.float(), h0)
    with torch.no_grad():
        o, s = run("triton")(*on_device([q, k, v, beta, h0]))
    assert launches and launches[-1]["num_stages"] == 2
    assert rel_err(o.float().cpu(), o_ref) < 1e-2 and rel_err(s.cpu(), s_ref) < 1e-2


def test_fused_backward_is_the_default_for_bf16_at_k64_only():
    """chunk.FUSED_WY_BWD's default (version 19's H200 timings): bf16 inputs at padded K = 64 (heads up to 64)
    take dqkw_wy; other dtypes and head sizes the two kernels."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    assert all(tchunk._fused_wy_bwd(K, torch.bfloat16) for K in (16, 32, 50, 64))  # (heads under 64 are padded)
    assert not tchunk._fused_wy_bwd(64, torch.float32) and not tchunk._fused_wy_bwd(64, torch.float16)
    assert not any(tchunk._fused_wy_bwd(K, torch.bfloat16) for K in (100, 128, 256))
    assert tchunk._launch("dqkw_wy", 64, torch.bfloat16) == {"num_warps": 4, "num_stages": 1}


def test_training_forward_stages_follow_programs_per_sm(monkeypatch):
    """The default TRAIN_STATE_FWD rule (version 20): at K = 64 and 128 in bf16 the training forward's state pass
    takes 2 stages and Q in one buffer (two blocks per SM) where its programs reach 1.5 per SM, and keeps its
    own launch (3 stages) where they are fewer; K = 256, other dtypes and the other passes are untouched."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "_sm_count", lambda device: 132)
    bf16 = torch.bfloat16
    for K in (64, 128):
        many = tchunk._state_fwd_launch(K, bf16, 512, DEVICE, False, True)
        assert many["num_stages"] == 2 and many["Q_ONE_BUFFER"], K
        assert tchunk._state_fwd_launch(K, bf16, 256, DEVICE, False, True)["Q_ONE_BUFFER"], K
        few = tchunk._state_fwd_launch(K, bf16, 128, DEVICE, False, True)
        assert few == {**tchunk._launch("state_fwd", K, bf16), "Q_ONE_BUFFER": False}, K
        assert few["num_stages"] == 3, K
        assert not tchunk._state_fwd_launch(K, torch.float32, 512, DEVICE, False, True)["Q_ONE_BUFFER"]
        assert not tchunk._state_fwd_launch(K, bf16, 512, DEVICE, False, False)["Q_ONE_BUFFER"]
    assert not tchunk._state_fwd_launch(256, bf16, 512, DEVICE, False, True)["Q_ONE_BUFFER"]


def test_training_forward_with_q_in_one_buffer_changes_nothing(monkeypatch):
    """chunk.TRAIN_STATE_FWD: the keeping forward's state pass with its own stages and Q's tile through an identity
    select (Q_ONE_BUFFER, one shared-memory buffer instead of one per stage) gives the same output, final state
    and gradients, bit for bit, in bf16; the setting reaches only that pass (bf16, keeping and writing the
    output), and a NaN in q still reaches the output."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    setting = {"num_stages": 2, "q_one_buffer": True}
    monkeypatch.setattr(tchunk, "TRAIN_STATE_FWD", {64: setting})
    monkeypatch.setattr(tchunk, "TRAIN_MANY_PROGRAMS", 0)
    launch = lambda inference, training, dtype=torch.bfloat16: tchunk._state_fwd_launch(  # noqa: E731
        64, dtype, 1, DEVICE, inference, training)
    assert launch(False, True) == {"num_warps": 4, "num_stages": 2, "Q_ONE_BUFFER": True}
    assert not launch(True, False)["Q_ONE_BUFFER"] and not launch(False, False)["Q_ONE_BUFFER"]
    assert not launch(False, True, torch.float32)["Q_ONE_BUFFER"]
    monkeypatch.setattr(tchunk, "KEEP_STATES", True)
    inputs = on_device(make_inputs(1, 150, 2, 64, 48, torch.bfloat16))
    do, dstate = torch.randn(1, 150, 2, 48, device=DEVICE), torch.randn(1, 2, 64, 48, device=DEVICE)
    results = []
    for table in ({}, {64: setting}):
        monkeypatch.setattr(tchunk, "TRAIN_STATE_FWD", table)
        results.append(grads(run("triton"), leaves(*inputs), do, dstate))
    (o0, s0, g0), (o1, s1, g1) = results
    assert torch.equal(o0, o1) and torch.equal(s0, s1)
    for name, a, b in zip(NAMES, g0, g1):
        assert torch.equal(a, b), name
    q = inputs[0].clone()
    q[0, 70, 1, 5] = float("nan")
    with torch.enable_grad():
        o = run("triton")(*leaves(q, *inputs[1:]))[0]
    assert torch.isnan(o[0, 70, 1]).all() and not torch.isnan(o[0, :64]).any()


@pytest.mark.parametrize("keep, backward", [(True, False), (False, False), (True, True)])
def test_pipelined_forward_in_segments_matches_naive(keep, backward, monkeypatch):
    """chunk.PIPELINE (the WY forward and the state pass launched per segment of chunks, each segment from the
    state the previous one left) and PIPELINE_BWD (the reverse pass per segment, last first, each segment's
    chunk-parallel kernels after it): float32 at 1e-5 with an initial state, gradients through kept or
    recomputed states; bf16 within the low-precision bounds; packed sequences are never cut."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "PIPELINE", "1")
    monkeypatch.setattr(tchunk, "PIPELINE_BWD", backward)
    monkeypatch.setattr(tchunk, "PIPELINE_SEGMENTS", 4)
    monkeypatch.setattr(tchunk, "PIPELINE_WU", False)  # the pass from A (test_pipelined_split_output_...: from W, U)
    monkeypatch.setattr(tchunk, "KEEP_STATES", keep)
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    launches = []
    real = tchunk._state_fwd
    monkeypatch.setattr(tchunk, "_state_fwd", lambda *a, **kw: launches.append(kw.get("c0", 0)) or real(*a, **kw))
    reverse = []
    real_bwd = tchunk._state_bwd
    monkeypatch.setattr(tchunk, "_state_bwd", lambda *a: reverse.append(a[-2:]) or real_bwd(*a))
    check_fp32("triton", 2, 600, 2, 32, 16)  # 10 chunks: segments at chunks 0, 2, 5, 8 (and the backward's pass)
    assert launches[:4] == [0, 2, 5, 8]
    assert reverse == ([(8, 10), (5, 8), (2, 5), (0, 2)] if backward else [(0, 10)])
    check_fp32("triton", 1, 200, 1, 64, 100)  # 4 chunks: 2 segments
    fused = []  # bf16 at K = 64 takes the fused dqkw_wy (chunk.FUSED_WY_BWD), per segment where PIPELINE_BWD
    kernel = tchunk.kernels.dqkw_wy_kernel
    monkeypatch.setattr(tchunk.kernels, "dqkw_wy_kernel", type("Counted", (), {"__getitem__": lambda self, grid: (
        lambda *args, **kw: fused.append(args[18]) or kernel[grid](*args, **kw))})())  # fmt: skip
    check_low_precision(torch.bfloat16, 1, 256, 2, 64, 32)
    assert sorted(fused) == ([0, 2] if backward else [0])  # 4 chunks: 2 segments
    chunks = tchunk._Chunks(1, 256, torch.tensor([0, 100, 256]))
    assert tchunk._pipeline_segments(torch.empty(1, 256, 2, 64), torch.empty(1, 256, 2, 64), chunks, 64) == 1
    monkeypatch.setattr(tchunk, "PIPELINE", "auto")  # on a CPU tensor: never
    chunks = tchunk._Chunks(2, 600, None)
    assert tchunk._pipeline_segments(torch.empty(2, 600, 2, 32), torch.empty(2, 600, 2, 16), chunks, 16) == 1


@pytest.mark.parametrize("mode", ["split", "wu_split", "wu"])
def test_pipelined_split_output_and_local_dv_match_naive(mode, monkeypatch):
    """chunk.PIPELINE_SPLIT_OUTPUT: a pipelined forward that keeps the states walks the chain per segment and
    forms each segment's output with output_kernel (its chunk range); PIPELINE_WU: that pass from the WY
    forward's W and U (the output by output_kernel with PIPELINE_SPLIT_OUTPUT, else in the pass from P);
    PIPELINE_SPLIT_DV: the pipelined backward forms each segment's local dV' from P with dv_local_kernel, last
    segment first, and the reverse pass reads it. Float32 at 1e-5 with an initial state, bf16 within the
    low-precision bounds; a forward that keeps nothing stays fused."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    wu, split = mode.startswith("wu"), mode != "wu"
    monkeypatch.setattr(tchunk, "PIPELINE_WU", wu)
    chains = []
    real_wu = tchunk._state_wu
    monkeypatch.setattr(tchunk, "_state_wu", lambda *a, **kw: chains.append(a[-2:]) or real_wu(*a, **kw))
    monkeypatch.setattr(tchunk, "PIPELINE", "1")
    monkeypatch.setattr(tchunk, "PIPELINE_BWD", True)
    monkeypatch.setattr(tchunk, "PIPELINE_SEGMENTS", 4)
    monkeypatch.setattr(tchunk, "PIPELINE_SPLIT_OUTPUT", split)
    monkeypatch.setattr(tchunk, "PIPELINE_SPLIT_DV", True)
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    ranges = []
    real = tchunk._output
    monkeypatch.setattr(tchunk, "_output", lambda *a, **kw: ranges.append((kw["c0"], kw["c1"])) or real(*a, **kw))
    local = []  # (C0, LOAD_P) of each dv_local launch
    kernel = tchunk.kernels.dv_local_kernel
    monkeypatch.setattr(tchunk.kernels, "dv_local_kernel", type("Counted", (), {"__getitem__": lambda self, grid: (
        lambda *args, **kw: local.append((args[9], kw["LOAD_P"])) or kernel[grid](*args, **kw))})())  # fmt: skip
    check_fp32("triton", 2, 600, 2, 32, 16)  # 10 chunks: segments at chunks 0, 2, 5, 8
    assert ranges == ([(0, 2), (2, 5), (5, 8), (8, 10)] if split else [])
    assert chains == ([(0, 2), (2, 5), (5, 8), (8, 10)] if wu else [])
    assert local == [(8, True), (5, True), (2, True), (0, True)]
    ranges.clear()
    local.clear()
    check_low_precision(torch.bfloat16, 1, 256, 2, 64, 32)
    assert ranges == ([(0, 2), (2, 4)] if split else []) and local == [(2, True), (0, True)]
    ranges.clear()
    monkeypatch.setattr(tchunk, "KEEP_STATES", False)
    check_fp32("triton", 1, 200, 1, 64, 100)
    assert ranges == []


def test_pipeline_cuts_place_the_segments(monkeypatch):
    """chunk.PIPELINE_FWD_CUTS / PIPELINE_BWD_CUTS: the segments at the given fractions of the chunks (their
    number one more than the cuts'), each pass from the state the one before left: float32 at 1e-5 against
    naive.py with an initial state; a sequence with fewer chunks than the cuts need falls back to even
    segments."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "PIPELINE", "1")
    monkeypatch.setattr(tchunk, "PIPELINE_BWD", True)
    monkeypatch.setattr(tchunk, "PIPELINE_WU", False)
    monkeypatch.setattr(tchunk, "PIPELINE_FWD_CUTS", [0.3])
    monkeypatch.setattr(tchunk, "PIPELINE_BWD_CUTS", [0.25, 0.6])
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    launches, reverse = [], []
    real, real_bwd = tchunk._state_fwd, tchunk._state_bwd
    monkeypatch.setattr(tchunk, "_state_fwd", lambda *a, **kw: launches.append(kw.get("c0", 0)) or real(*a, **kw))
    monkeypatch.setattr(tchunk, "_state_bwd", lambda *a: reverse.append(a[-2:]) or real_bwd(*a))
    check_fp32("triton", 2, 600, 2, 32, 16)  # 10 chunks
    assert launches[:2] == [0, 3] and reverse == [(6, 10), (2, 6), (0, 2)]
    launches.clear()
    reverse.clear()
    check_fp32("triton", 1, 250, 1, 32, 16)  # 4 chunks: the forward's cut at chunk 1; the backward's 2 even
    assert launches[:2] == [0, 1] and reverse == [(2, 4), (0, 2)]


@pytest.mark.parametrize("mode", [False, True, "pipelined"])
def test_reverse_pass_from_w_matches_naive(mode, monkeypatch):
    """chunk.REVERSE_FROM_W: W = A beta K by w_kernel (per segment, last first, where the backward is pipelined;
    with "pipelined" only there) and the reverse pass's W^T dV' from it: float32 gradients at 1e-5 against
    naive.py with an initial state, on equal and packed sequences; bf16 within the low-precision bounds; heads
    over REVERSE_FROM_W_MAX_K keep A."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    pipelined = mode is not False
    monkeypatch.setattr(tchunk, "REVERSE_FROM_W", True if mode is False else mode)
    monkeypatch.setattr(tchunk, "REVERSE_FROM_W_MIN_K", 16)
    monkeypatch.setattr(tchunk, "PIPELINE", "1" if pipelined else "0")
    monkeypatch.setattr(tchunk, "PIPELINE_BWD", True)
    monkeypatch.setattr(tchunk, "PIPELINE_SEGMENTS", 4)
    launches = []  # C0 of each w_kernel launch
    kernel = tchunk.kernels.w_kernel
    monkeypatch.setattr(tchunk.kernels, "w_kernel", type("Counted", (), {"__getitem__": lambda self, grid: (
        lambda *args, **kw: launches.append(args[7]) or kernel[grid](*args, **kw))})())  # fmt: skip
    check_fp32("triton", 2, 600, 2, 32, 16)  # 10 chunks: segments at chunks 0, 2, 5, 8
    assert launches == ([8, 5, 2, 0] if pipelined else [0])
    launches.clear()
    check_low_precision(torch.bfloat16, 1, 256, 2, 64, 32)
    assert launches == ([2, 0] if pipelined else [0])
    launches.clear()
    check_fp32("triton", 1, 300, 2, 32, 16, cu_seqlens=torch.tensor([0, 70, 300]))  # packed: never pipelined
    assert launches == ([] if mode == "pipelined" else [0])
    launches.clear()
    monkeypatch.setattr(tchunk, "REVERSE_FROM_W_MAX_K", 16)
    check_fp32("triton", 1, 100, 1, 32, 16)
    assert launches == []


@pytest.mark.parametrize("K, wu, from_w", [(64, True, False), (128, True, True), (256, False, False)])
def test_pipeline_defaults_by_head_width(K, wu, from_w, monkeypatch):
    """The defaults where the pipelines run (forced here: 4 chunks, 2 segments): the forward that keeps the
    states walks the chain from W and U up to PIPELINE_WU_MAX_K (128), the reverse pass forms W^T dV' from W at
    K = 128 only (REVERSE_FROM_W "pipelined", as measured in ab_v22a/b.json); gradients within the bf16 bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "PIPELINE", "1")
    monkeypatch.setattr(tchunk, "KEEP_STATES", True)
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    chains, formed = [], []
    real_wu = tchunk._state_wu
    monkeypatch.setattr(tchunk, "_state_wu", lambda *a, **kw: chains.append(a[-2:]) or real_wu(*a, **kw))
    kernel = tchunk.kernels.w_kernel
    monkeypatch.setattr(tchunk.kernels, "w_kernel", type("Counted", (), {"__getitem__": lambda self, grid: (
        lambda *args, **kw: formed.append(args[7]) or kernel[grid](*args, **kw))})())  # fmt: skip
    check_low_precision(torch.bfloat16, 1, 256, 1, K, 32)
    assert chains == ([(0, 2), (2, 4)] if wu else [])
    assert formed == ([2, 0] if from_w else [])


def test_wide_state_tile_at_k256_within_twice_the_reference_error():
    """K = 256 in bf16 takes the forward's 64-wide state tile where the programs fill the device (here the
    interpreter's one 'SM') and, in a forward that keeps nothing for a backward, always: output and gradients
    within the low-precision bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    one_head = tchunk._state_tile_v(256, 64, "state_fwd", torch.bfloat16, 1, DEVICE)
    assert one_head == (32 if DEVICE.type == "cuda" else 64)
    assert tchunk._state_tile_v(256, 64, "state_fwd", torch.bfloat16, 1, DEVICE, keeps=False) == 64
    assert tchunk._state_tile_v(256, 64, "state_fwd", torch.float16, 1000, DEVICE, keeps=False) == 32
    assert tchunk._state_tile_v(256, 64, "state_fwd", torch.float16, 1000, DEVICE) == 32
    check_low_precision(torch.bfloat16, 1, 64, 1, 256, 64)


def test_every_bf16_operand_bit_at_once_within_twice_the_reference_error(monkeypatch):
    """All of the backward's bf16 operand bits the sweep may choose (the recomputing and reverse state
    passes', dqkw's, wy_bwd's) with V' and dV' in bf16: the gradients stay within the bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    every = {"state_fwd": 7, "state_recompute": 7, "state_bwd": 3, "dqkw": 15, "wy_bwd": 15}
    monkeypatch.setattr(tchunk, "HALF_OPERANDS", every)
    monkeypatch.setattr(tchunk, "HALF_VPRIME", True)
    assert tchunk._half_operands("state_bwd", torch.bfloat16) == 3
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 64)


@pytest.mark.parametrize("keep", [False, True])
def test_recompute_bf16_operands_within_twice_the_reference_error(keep, monkeypatch):
    """The backward's recomputing state pass with every bf16 operand bit (chunk.HALF_OPERANDS
    ["state_recompute"]), and a forward that keeps the states with the same bits: gradients within the
    bounds, and keeping or recomputing give the same gradients (to float32 rounding: a GPU compiler may
    order the forward's sums differently when it also writes the output)."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setitem(tchunk.HALF_OPERANDS, "state_recompute", 1 | 2 | 4)
    monkeypatch.setattr(tchunk, "KEEP_STATES", keep)
    assert tchunk._half_operands("state_recompute", torch.bfloat16, 64, 32) == 1
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 64)
    inputs = make_inputs(1, 130, 2, 64, 64, torch.bfloat16)
    do, dstate = torch.randn(1, 130, 2, 64), torch.randn(1, 2, 64, 64)
    monkeypatch.setattr(tchunk, "KEEP_STATES", not keep)
    other = triton_gradients(inputs, do, dstate)
    monkeypatch.setattr(tchunk, "KEEP_STATES", keep)
    assert_same_gradients(triton_gradients(inputs, do, dstate), other)


def triton_gradients(inputs, do, dstate):
    return grads(run("triton"), leaves(*on_device(inputs)), do.to(DEVICE), dstate.to(DEVICE))[2]


def assert_same_gradients(these, those, bound=1e-4):
    for name, a, b in zip(NAMES, these, those, strict=True):
        assert rel_err(a.float(), b.float()) < bound, name


def test_states_are_kept_where_programs_are_few(monkeypatch):
    """Long sequences (few sequences x heads per SM) keep the chunk states for the backward; the gradients
    are those of the recomputing backward."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "KEEP_STATES", False)
    monkeypatch.setattr(tchunk, "_sm_count", lambda device: 132)
    assert tchunk._keep_states(32, 128, DEVICE) and tchunk._keep_states(64, 64, DEVICE)  # T = 16384, B = 2
    assert not tchunk._keep_states(128, 128, DEVICE) and not tchunk._keep_states(256, 64, DEVICE)  # T = 4096
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    assert not tchunk._keep_states(1, 64, DEVICE)
    monkeypatch.setattr(tchunk, "KEEP_STATES", True)
    assert tchunk._keep_states(10**6, 64, DEVICE)

    inputs = make_inputs(1, 130, 2, 32, 48, torch.bfloat16)
    do, dstate = torch.randn(1, 130, 2, 48), torch.randn(1, 2, 32, 48)
    calls = []
    real_fwd = tchunk.chunk_fwd
    monkeypatch.setattr(tchunk, "chunk_fwd", lambda *a, **kw: calls.append(a[7]) or real_fwd(*a, **kw))
    results = []
    for sms in (10**6, 1):  # kept, then recomputed
        monkeypatch.setattr(tchunk, "KEEP_STATES", False)
        monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", True)
        monkeypatch.setattr(tchunk, "_sm_count", lambda device, sms=sms: sms)
        results.append(triton_gradients(inputs, do, dstate))
    assert calls == [True, False]
    assert_same_gradients(*results)


def test_triton_availability_is_a_constant_under_torch_compile():
    """`available` is asked inside compiled graphs (the layer's forward): torch.compile must read it without
    tracing importlib (torch 2.11 refuses find_spec under fullgraph; later versions warn about the cache)."""
    import warnings

    from assocmem.ops.delta_rule.triton import available

    def f(x):
        return x + 1 if available(x.device) else x - 1

    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = torch.compile(f, fullgraph=True, backend="eager")(torch.zeros(2, device=DEVICE))
    assert torch.equal(out.cpu(), torch.ones(2))  # Triton is installed and runs here (GPU or interpreter)
    assert not [w for w in caught if "importlib" in str(w.message) or "lru_cache" in str(w.message)]


@pytest.mark.parametrize("packed", [False, True])
def test_forward_that_keeps_the_states_gives_the_same_gradients(packed, monkeypatch):
    """chunk.KEEP_STATES: the forward writes the chunk-start states and V' and the backward reads them instead
    of recomputing them. The same kernel math, so the same gradients, bit for bit (bf16 inputs), and the
    float32 checks against naive.py hold; the packed case allocates the states' upper bound."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    cu = torch.tensor([0, 50, 51, 180], dtype=torch.int64) if packed else None
    B, T, N = (1, 180, 3) if packed else (2, 100, 2)
    inputs = on_device(make_inputs(B, T, 2, 32, 16, torch.bfloat16, N=N))
    do, dstate = torch.randn(B, T, 2, 16, device=DEVICE), torch.randn(N, 2, 32, 16, device=DEVICE)
    fn = run("triton", cu_seqlens=None if cu is None else cu.to(DEVICE))
    monkeypatch.setattr(tchunk, "KEEP_STATES", False)
    monkeypatch.setattr(tchunk, "KEEP_FEW_PROGRAMS", False)
    _, s_recompute, g_recompute = grads(fn, leaves(*inputs), do, dstate)
    monkeypatch.setattr(tchunk, "KEEP_STATES", True)
    _, s_kept, g_kept = grads(fn, leaves(*inputs), do, dstate)
    assert rel_err(s_kept, s_recompute) < 1e-2  # the keeping forward skips the bf16 operand rounding
    for name, a, b in zip(NAMES, g_kept, g_recompute):
        assert torch.equal(a, b), name
    check_fp32("triton", B, T, 2, 32, 16, cu_seqlens=cu)


@pytest.mark.parametrize("packed", [False, True])
def test_split_output_matches_naive_fp32_and_the_fused_forward_in_bf16(packed, monkeypatch):
    """chunk.SPLIT_OUTPUT: the state pass stores the states and the output follows in a parallel kernel. On
    equal and packed sequences (partial chunks, a one-token sequence) the float32 checks hold; in bf16 the
    output, state and gradients equal the fused forward's (the same roundings; float32 summation order)."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    cu = torch.tensor([0, 50, 51, 180], dtype=torch.int64) if packed else None
    B, T, N = (1, 180, 3) if packed else (2, 100, 2)
    monkeypatch.setattr(tchunk, "SPLIT_OUTPUT", "1")
    check_fp32("triton", B, T, 2, 32, 48, cu_seqlens=cu)
    inputs = on_device(make_inputs(B, T, 2, 64, 64, torch.bfloat16, N=N))
    do, dstate = torch.randn(B, T, 2, 64, device=DEVICE), torch.randn(N, 2, 64, 64, device=DEVICE)
    fn = run("triton", cu_seqlens=None if cu is None else cu.to(DEVICE))
    results = []
    for split in ("0", "1"):
        monkeypatch.setattr(tchunk, "SPLIT_OUTPUT", split)
        results.append(grads(fn, leaves(*inputs), do, dstate))
    (o0, s0, g0), (o1, s1, g1) = results
    assert rel_err(o1.float(), o0.float()) < 1e-3 and rel_err(s1, s0) < 1e-5
    assert_same_gradients(g1, g0, bound=1e-5)
    monkeypatch.setattr(tchunk, "SPLIT_OUTPUT", "auto")  # a keeping forward with a narrow state tile only
    assert tchunk._split_output(True, 32) and not tchunk._split_output(False, 32)
    assert not tchunk._split_output(True, 64)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("split", ["0", "1"])
def test_stored_p_matches_naive_fp32_and_the_products_in_bf16(packed, split, monkeypatch):
    """chunk.STORE_P: the WY forward stores P = scale tril(Q K^T) for the state passes (the fused or split
    forward's output, the reverse pass's local dV' in place of dv_local_kernel). The float32 checks against
    naive.py hold on equal and packed sequences (partial chunks, a one-token sequence); in bf16 output, state
    and gradients stay close to the forming kernels' (P rounded to bf16 once, as the products round it), for
    training and inference forwards; without P the backward runs dv_local_kernel, with it not."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk
    from assocmem.ops.delta_rule.triton import kernels as tkernels

    cu = torch.tensor([0, 50, 51, 180], dtype=torch.int64) if packed else None
    B, T, N = (1, 180, 3) if packed else (2, 100, 2)
    monkeypatch.setattr(tchunk, "SPLIT_OUTPUT", split)
    monkeypatch.setattr(tchunk, "STORE_P", {"train": "1", "infer": "1"})
    assert tchunk._store_p(True, 64) and tchunk._store_p(False, 64)
    check_fp32("triton", B, T, 2, 32, 48, cu_seqlens=cu)
    inputs = on_device(make_inputs(B, T, 2, 64, 64, torch.bfloat16, N=N))
    do, dstate = torch.randn(B, T, 2, 64, device=DEVICE), torch.randn(N, 2, 64, 64, device=DEVICE)
    fn = run("triton", cu_seqlens=None if cu is None else cu.to(DEVICE))
    launches = []
    real_dv_local = tkernels.dv_local_kernel
    monkeypatch.setattr(tkernels, "dv_local_kernel", type("Counted", (), {
        "__getitem__": lambda self, grid: launches.append(grid) or real_dv_local[grid]})())
    results, inference = [], []
    for stored in ("0", "1"):
        monkeypatch.setattr(tchunk, "STORE_P", {"train": stored, "infer": stored})
        results.append(grads(fn, leaves(*inputs), do, dstate))
        assert len(launches) == (1 if stored == "0" else 0)
        launches.clear()
        with torch.no_grad():
            inference.append(fn(*inputs))
    (o0, s0, g0), (o1, s1, g1) = results
    assert rel_err(o1.float(), o0.float()) < 5e-3 and rel_err(s1, s0) < 1e-5
    assert rel_err(inference[1][0].float(), inference[0][0].float()) < 5e-3
    assert rel_err(inference[1][1], inference[0][1]) < 1e-5
    assert_same_gradients(g1, g0, bound=1e-2)  # local dV' from bf16 P: 3-5e-3 under the interpreter
    monkeypatch.setattr(tchunk, "STORE_P", {"train": "1", "infer": "1"})
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 64)
    monkeypatch.setattr(tchunk, "STORE_P", {"train": "auto", "infer": "auto"})  # inference at K > 128 only
    assert tchunk._store_p(True, 64) and not tchunk._store_p(False, 128) and tchunk._store_p(False, 256)


def test_bf16_a_storage_changes_nothing_where_every_reader_rounds_it(monkeypatch):
    """chunk.HALF_A: A stored in bf16 (bf16 inputs) only where every kernel that reads A rounds it to bf16 as
    it enters a matmul; there output, state and gradients equal the float32 A's (to float32 summation order),
    and with any of those bits off A stays float32."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    every = {"state_fwd": 7, "state_recompute": 7, "state_bwd": 3, "dqkw": 15, "wy_bwd": 15}
    monkeypatch.setattr(tchunk, "HALF_OPERANDS", dict(every))
    inputs = on_device(make_inputs(1, 130, 2, 64, 64, torch.bfloat16))
    do, dstate = torch.randn(1, 130, 2, 64, device=DEVICE), torch.randn(1, 2, 64, 64, device=DEVICE)
    results = []
    for half_a in (False, True):
        monkeypatch.setattr(tchunk, "HALF_A", half_a)
        assert tchunk._half_a(torch.bfloat16) == half_a and not tchunk._half_a(torch.float16)
        results.append(grads(run("triton"), leaves(*inputs), do, dstate))
    (o0, s0, g0), (o1, s1, g1) = results
    assert rel_err(o1.float(), o0.float()) < 1e-5 and rel_err(s1, s0) < 1e-5
    assert_same_gradients(g1, g0, bound=1e-5)
    for name, bit in tchunk._A_BITS.items():
        monkeypatch.setitem(tchunk.HALF_OPERANDS, name, every[name] & ~bit)
        assert not tchunk._half_a(torch.bfloat16), name
        monkeypatch.setitem(tchunk.HALF_OPERANDS, name, every[name])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("keep", [False, True])
def test_version12_storage_options_within_twice_the_reference_error(keep, fused, monkeypatch):
    """Version 12's options at once (A, dW and dK's part in bf16) with every bf16 operand bit, kept or
    recomputed states, dqkw and wy_bwd as two kernels or fused: output and gradients within the low-precision
    bounds; float16 keeps float32 buffers and stays within its own."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_OPERANDS",
                        {"state_fwd": 7, "state_recompute": 7, "state_bwd": 3, "dqkw": 15, "wy_bwd": 15})
    for name in ("HALF_A", "HALF_DW", "HALF_VPRIME", "KEEP_STATES"):
        monkeypatch.setattr(tchunk, name, name != "KEEP_STATES" or keep)
    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {64: fused})
    assert tchunk._dw_dtype(torch.bfloat16) == torch.bfloat16 and tchunk._dw_dtype(torch.float16) == torch.float32
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 64)
    if not fused and not keep:
        check_low_precision(torch.float16, 1, 128, 2, 64, 32)


def test_state_carried_across_calls_equals_one_call():
    q, k, v, beta, h0 = on_device(make_inputs(1, 150, 2, 32, 32))
    o, s = run("triton")(q, k, v, beta, h0)
    o1, s1 = run("triton")(q[:, :70], k[:, :70], v[:, :70], beta[:, :70], h0)
    o2, s2 = run("triton_recurrent")(q[:, 70:75], k[:, 70:75], v[:, 70:75], beta[:, 70:75], s1)
    o3, s3 = run("triton")(q[:, 75:], k[:, 75:], v[:, 75:], beta[:, 75:], s2)
    assert rel_err(torch.cat([o1, o2, o3], 1).cpu(), o.cpu()) < 1e-5
    assert rel_err(s3.cpu(), s.cpu()) < 1e-5


def test_empty_sequence_keeps_state():
    q, k, v, beta, h0 = on_device(make_inputs(2, 0, 2, 16, 16))
    for backend in ("triton", "triton_recurrent"):
        o, s = run(backend)(q, k, v, beta, h0)
        assert o.shape == (2, 0, 2, 16) and torch.equal(s, h0)


@pytest.mark.parametrize("l2norm", [False, True])
def test_decode_step_in_place_equals_the_pytorch_step(l2norm):
    from assocmem.ops.delta_rule.triton.recurrent import recurrent_step_

    q, k, v, beta, h0 = make_inputs(3, 1, 4, 32, 48)
    o_ref, s_ref = delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], h0, scale=0.2, qk_l2norm=l2norm)
    state = h0.to(DEVICE)
    pointer = state.data_ptr()
    o = recurrent_step_(*on_device([q, k, v, beta]), state, 0.2, qk_l2norm=l2norm)
    assert state.data_ptr() == pointer
    assert rel_err(o[:, 0].cpu(), o_ref) < 1e-5 and rel_err(state.cpu(), s_ref) < 1e-5


def test_l2norm_inside_the_op_keeps_one_dtype_for_the_kernels():
    """qk_l2norm normalises in float32; the kernels still get (and return) v's dtype, as the layers need."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 70, 2, 16, dtype=torch.bfloat16) for _ in range(3))
    beta = torch.rand(1, 70, 2, dtype=torch.bfloat16)
    leaves = [x.to(DEVICE).requires_grad_() for x in (q, k, v, beta)]
    o, _ = delta_rule(*leaves, qk_l2norm=True, backend="triton")
    assert o.dtype == torch.bfloat16
    o.float().square().sum().backward()
    ref, _ = delta_rule(*(x.float() for x in (q, k, v, beta)), qk_l2norm=True, backend="naive")
    assert rel_err(o.float().cpu(), ref) < 1e-2
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 for x in leaves)


def test_l2_normalize_keeping_output_matches_the_specification():
    """The L2 norm the Triton path applies (l2norm.py): float64 gradients pass gradcheck; in bf16 the output
    equals the specification's rounded to bf16, and dx (from the rounded output) is within 2x the specification's
    own bf16 error of float64, under 1e-2."""
    from assocmem.ops.delta_rule.l2norm import l2_normalize_keeping_output

    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(l2_normalize_keeping_output, (x,))
    x = torch.randn(2, 70, 4, 64) * 3
    g = torch.randn(2, 70, 4, 64)
    x64 = x.double().requires_grad_()
    l2_normalize(x64).backward(g.double())
    xb = x.bfloat16().requires_grad_()
    y = l2_normalize_keeping_output(xb)
    assert y.dtype == torch.bfloat16 and torch.equal(y, l2_normalize(xb.float()).bfloat16())
    y.backward(g.bfloat16())
    xs = x.bfloat16().requires_grad_()  # the specification's path: float32 through autograd, then bf16
    l2_normalize(xs.float()).bfloat16().backward(g.bfloat16())
    assert rel_err(xb.grad.double(), x64.grad) <= 2 * rel_err(xs.grad.double(), x64.grad)
    assert rel_err(xb.grad.double(), x64.grad) < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_l2_normalize_keeping_output_under_torch_compile(dtype):
    """Under torch.compile the L2 norm of the Triton path (the plain form there: the autograd function's
    compiled graph gave a zero gradient under torch 2.11 on the GPU) gives the eager output and gradient."""
    from assocmem.ops.delta_rule.l2norm import l2_normalize_keeping_output

    torch.manual_seed(0)
    x = (torch.randn(2, 70, 2, 32, device=DEVICE) * 2).to(dtype)
    g = torch.randn(2, 70, 2, 32, device=DEVICE).to(dtype)

    def f(x):
        return l2_normalize_keeping_output(x * 1.5)

    grads = []
    for fn in (f, torch.compile(f)):
        xs = x.clone().requires_grad_()
        y = fn(xs)
        y.backward(g)
        grads.append((y.detach().float(), xs.grad.float()))
    (y_eager, g_eager), (y_compiled, g_compiled) = grads
    assert g_eager.norm() > 0
    assert rel_err(y_compiled, y_eager) < (1e-6 if dtype == torch.float32 else 1e-2)
    assert rel_err(g_compiled, g_eager) < (1e-5 if dtype == torch.float32 else 2e-2)


def test_triton_op_under_torch_compile_with_q_and_k_one_tensor():
    """One tensor passed as both q and k (its gradient the sum of dq and dk), through the Triton op under
    torch.compile: the eager output and gradient (scripts/diag_l2_compile.py on the GPU found them unequal
    under torch 2.11 before the op copied k there)."""
    torch.manual_seed(0)
    x = torch.randn(2, 70, 2, 32, device=DEVICE)
    v = torch.randn(2, 70, 2, 32, device=DEVICE)
    beta = torch.rand(2, 70, 2, device=DEVICE)

    def f(x):
        y = x / x.norm(dim=-1, keepdim=True)
        return delta_rule(y, y, v, beta, backend="triton")[0]

    results = []
    for fn in (f, torch.compile(f)):
        xs = x.clone().requires_grad_()
        o = fn(xs)
        o.square().sum().backward()
        results.append((o.detach(), xs.grad))
    assert results[0][1].norm() > 0
    assert rel_err(results[1][0], results[0][0]) < 1e-5
    assert rel_err(results[1][1], results[0][1]) < 1e-4


def test_l2norm_inside_the_op_keeps_no_float32_copy_for_the_backward():
    """With qk_l2norm on the Triton path, autograd keeps no float32 tensor of q's shape: the normalised q and k
    it keeps are the ones the kernels receive (scripts/saved_bytes.py counts the same for a whole model)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 70, 2, 16, dtype=torch.bfloat16, device=DEVICE, requires_grad=True) for _ in range(3))
    beta = torch.rand(1, 70, 2, dtype=torch.bfloat16, device=DEVICE, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        o, _ = delta_rule(q, k, v, beta, qk_l2norm=True, backend="triton")
    assert kept and not any(t.dtype == torch.float32 and t.shape == q.shape for t in kept)
    o.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad.float()).all()


def test_deltanet_layer_gradients_with_triton_equal_the_pytorch_path_under_autocast():
    """The whole layer (projections, convolutions, L2 norm, beta, output norm) with two heads in bf16
    autocast: every parameter's gradient through the Triton kernels is within twice the error of the
    PyTorch path under the same autocast, both against the layer in float32 (STYLE's rule)."""
    from assocmem.layers import DeltaNet

    x = torch.randn(2, 80, 64)
    grads = {}
    for backend, autocast in (("chunk", False), ("chunk", True), ("triton", True)):
        torch.manual_seed(0)
        layer = DeltaNet(64, 2, backend=backend).to(DEVICE)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            y, _ = layer(x.to(DEVICE))
        y.float().square().mean().backward()
        grads[backend, autocast] = {n: p.grad.float().cpu() for n, p in layer.named_parameters()}
    reference = grads["chunk", False]
    assert len(reference) >= 8
    for name, g in reference.items():
        err, err_pytorch = rel_err(grads["triton", True][name], g), rel_err(grads["chunk", True][name], g)
        assert g.norm() > 0 and err <= 2 * err_pytorch and err < 5e-2, (name, err, err_pytorch)


def test_deltanet_layer_under_torch_compile_with_strided_inputs(monkeypatch):
    """The short convolutions hand the op strided q, k, v: the custom ops' fakes must promise the strides
    the kernels really write (a mismatch fails inside the compiled graph), for both backends."""
    from assocmem.layers import DeltaNet
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    x = torch.randn(2, 70, 64, device=DEVICE)
    for backend in ("chunk", "triton", "triton-keep", "triton-few"):
        monkeypatch.setattr(tchunk, "KEEP_STATES", backend == "triton-keep")  # the kept states' fakes too
        # few programs per SM (long sequences): the states kept by the rule, through the compiled graph
        monkeypatch.setattr(tchunk, "_sm_count", lambda device, few=backend == "triton-few": 10**6 if few else 1)
        backend = backend.split("-")[0]
        torch.manual_seed(0)
        layer = DeltaNet(64, 2, backend=backend).to(DEVICE)
        eager, _ = layer(x)
        eager.square().mean().backward()
        expected = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        compiled, _ = torch.compile(layer)(x)
        compiled.square().mean().backward()
        assert rel_err(compiled.detach(), eager.detach()) < 1e-5, backend
        for a, b in zip(layer.parameters(), expected):
            assert rel_err(a.grad, b) < 1e-4, backend


def test_bf16_op_under_torch_compile_with_kept_states_and_a_in_bf16(monkeypatch):
    """The defaults for bf16 inputs (A stored in bf16, states kept for the backward) through a full graph: the
    op's fakes promise the dtypes the kernels write; output and gradients as in eager mode."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_A", True)
    monkeypatch.setattr(tchunk, "KEEP_STATES", True)
    assert tchunk._half_a(torch.bfloat16)
    inputs = on_device(make_inputs(1, 70, 2, 32, 32, torch.bfloat16))

    def f(q, k, v, beta, h0):
        return delta_rule(q, k, v, beta, initial_state=h0, backend="triton")[0].float().square().sum()

    results = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        xs = leaves(*inputs)
        loss = fn(*xs)
        loss.backward()
        results.append((loss.detach(), [x.grad for x in xs]))
    (eager, g_eager), (compiled, g_compiled) = results
    assert rel_err(compiled, eager) < 1e-6
    assert_same_gradients(g_compiled, g_eager, bound=1e-6)


def test_tuned_launch_settings_load_and_other_tiles_stay_exact(tmp_path, monkeypatch):
    """A sweep's JSON (scripts/sweep_triton.py) sets warps, stages and tiles; the kernels stay exact with
    the other tiles it may choose (state kernels 32 wide, one dqkw key tile per head)."""
    import json

    from assocmem.ops.delta_rule.triton import chunk as tchunk

    for table in ("LAUNCH_BY_K", "DQKW_TILE_K", "DQKW_TILE_V", "STATE_TILE_V", "WY_BWD_TILE", "HALF_OPERANDS",
                  "FUSED_WY_BWD"):
        monkeypatch.setattr(tchunk, table, dict(getattr(tchunk, table)))
    monkeypatch.setattr(tchunk, "KEEP_STATES", False)
    monkeypatch.setattr(tchunk, "HALF_VPRIME", False)
    for flag in ("HALF_A", "HALF_DW"):
        monkeypatch.setattr(tchunk, flag, False)
    sweep = {"128": {"chosen": {"fused_wy_bwd": True, "dqkw_wy": {"num_warps": 4, "num_stages": 2},
                               "half_vprime": True, "half_a": True, "half_dw": False}},
             "64": {"fla": {}, "chosen": {
        "state_bwd": {"num_warps": 8, "num_stages": 1, "tile_v": 32, "times_ms": {}},
        "state_fwd": {"num_warps": 4, "num_stages": 2, "tile_v": 32},
        "dqkw": {"num_warps": 8, "num_stages": 1, "tile_k": 64, "tile_v": 32},
        "wy_bwd": {"num_warps": 8, "num_stages": 2, "tile": 32},
        "keep_states": True, "state_fwd_half_operands": 2, "state_recompute_half_operands": 3, "fused_wy_bwd": False,
        "backward_half_operands": {"dqkw": 15, "wy_bwd": 4}}}}  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    tchunk.load_tuned(tmp_path / "sweep.json")
    assert tchunk.LAUNCH_BY_K[("state_bwd", 64)] == {"num_warps": 8, "num_stages": 1}
    assert tchunk._state_tile_v(64, 64, "state_bwd") == 32 and tchunk._dqkw_tile_k(64) == 64
    assert tchunk._dqkw_tile_v(64, 64) == 32 and tchunk._wy_bwd_tiles(64, 48) == (32, 32)
    assert tchunk.KEEP_STATES and tchunk.HALF_OPERANDS["state_fwd"] == 2
    assert tchunk.HALF_OPERANDS["state_recompute"] == 3
    assert tchunk.HALF_OPERANDS["dqkw"] == 15 and tchunk.HALF_OPERANDS["wy_bwd"] == 4 and tchunk.HALF_VPRIME
    assert tchunk._fused_wy_bwd(128) and not tchunk._fused_wy_bwd(64)
    assert tchunk.HALF_A and not tchunk.HALF_DW
    assert tchunk.LAUNCH_BY_K[("dqkw_wy", 128)] == {"num_warps": 4, "num_stages": 2}
    tchunk.FUSED_WY_BWD.pop(128)
    check_fp32("triton", 1, 130, 2, 64, 64)
    tchunk.DQKW_TILE_K[128] = 128
    tchunk.STATE_TILE_V.update({("state_bwd", 128): 16, ("state_fwd", 128): 32})
    tchunk.DQKW_TILE_V[128] = 16
    tchunk.WY_BWD_TILE[128] = 16
    check_fp32("triton", 1, 70, 1, 128, 48)
    tchunk.STATE_TILE_V.update({("state_bwd", 256): 64, ("state_fwd", 256): 64})  # the sweep's K = 256 variant
    check_fp32("triton", 1, 70, 1, 256, 80)
    tchunk.STATE_TILE_V[("state_fwd", 256)] = 32  # a sweep's tile comes before the wide-tile rule
    assert tchunk._state_tile_v(256, 64, "state_fwd", torch.bfloat16, 10**6, DEVICE) == 32
    (tmp_path / "bad.json").write_text(json.dumps({"64": {"chosen": {"warp_drive": {}}}}))
    with pytest.raises(ValueError, match="unknown kernel 'warp_drive'"):
        tchunk.load_tuned(tmp_path / "bad.json")


def test_wy_backward_whole_head_tile_at_k128_and_the_ab_script_variants(monkeypatch):
    """Version 15's default: the WY backward takes a K = 128 head in one tile (values up to 128 too), exact in
    float32. scripts/ab_triton.py's variants set chunk tables from JSON: "name,128" keys become tuples, "128"
    numbers, a name ending in "+" updates a table instead of replacing it, and applying the returned values
    restores the module."""
    import importlib.util
    from pathlib import Path

    from assocmem.ops.delta_rule.triton import chunk as tchunk

    assert tchunk._wy_bwd_tiles(128, 128) == (128, 128) and tchunk._wy_bwd_tiles(128, 48) == (128, 64)
    assert tchunk._wy_bwd_tiles(64, 64) == (64, 64) and tchunk._wy_bwd_tiles(256, 256) == (64, 64)
    # (and the float32 WY forward at K = 128 on one stage, which timed faster than two)
    assert tchunk._launch("wy_fwd", 128, torch.float32)["num_stages"] == 1
    assert tchunk._launch("wy_fwd", 128, torch.bfloat16)["num_stages"] == 2
    check_fp32("triton", 1, 70, 1, 128, 100)

    path = Path(__file__).parents[2] / "scripts" / "ab_triton.py"
    spec = importlib.util.spec_from_file_location("ab_triton", path)
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    launch, tiles, state_tiles = dict(tchunk.LAUNCH_BY_K), dict(tchunk.WY_BWD_TILE), dict(tchunk.STATE_TILE_V)
    before = ab._apply({"LAUNCH_BY_K+": {"wy_bwd,128": {"num_warps": 8, "num_stages": 1}},
                        "WY_BWD_TILE": {"128": 64}, "STATE_TILE_V": {}})  # fmt: skip
    try:
        assert tchunk.LAUNCH_BY_K[("wy_bwd", 128)] == {"num_warps": 8, "num_stages": 1}
        assert tchunk.LAUNCH_BY_K[("dqkw", 128)] == launch[("dqkw", 128)]  # updated, not replaced
        assert tchunk.WY_BWD_TILE == {128: 64} and tchunk._wy_bwd_tiles(128, 128) == (64, 64)
        assert tchunk._state_tile_v(128, 128, "state_bwd") == 64  # the rule without the sweep's 32
    finally:
        ab._apply(before)
    assert tchunk.LAUNCH_BY_K == launch and tchunk.WY_BWD_TILE == tiles and tchunk.STATE_TILE_V == state_tiles
    with pytest.raises(ValueError, match="no attribute 'WARP_DRIVE'"):
        ab._apply({"WARP_DRIVE": 1})
    # a variant's turn sets its attributes only while it runs, also when it raises; a failure lands in the row
    seen = []
    ab.under({"PIPELINE": "1"}, lambda: seen.append(tchunk.PIPELINE))()
    with pytest.raises(RuntimeError):
        ab.under({"PIPELINE": "1"}, lambda: (_ for _ in ()).throw(RuntimeError("boom")))()
    assert seen == ["1"] and tchunk.PIPELINE == "auto"
    row = {}
    ab.report_failure(row, "v", "D=128", RuntimeError("boom"))
    assert row == {"v_error": "RuntimeError: boom"}


def test_small_heads_take_64_wide_tiles_and_match_naive(monkeypatch):
    """chunk.MIN_TILE: key and value sizes under 64 are padded to 64-wide tiles in every chunk kernel (bf16
    gradients at V = 16 and 32 were wrong on the H200 with narrower tiles); padded tiles give the float32
    results of naive.py and the bf16 bounds, and the narrow tiles stay reachable for the interpreter."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    assert tchunk.MIN_TILE == 64 and tchunk._width(16) == 64 and tchunk._width(100) == 128
    assert tchunk._wy_bwd_tiles(32, 16) == (64, 64) and tchunk._dqkw_tile_v(32, 16) == 64
    assert tchunk._state_tile_v(16, 32, "state_bwd") == 64
    check_fp32("triton", 1, 100, 2, 32, 16)
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 32)
    monkeypatch.setattr(tchunk, "MIN_TILE", 16)
    assert tchunk._wy_bwd_tiles(32, 16) == (32, 16)
    check_fp32("triton", 1, 100, 2, 32, 16)


def test_host_integer_helpers_equal_tritons():
    """chunk._cdiv / _pow2 (plain Python, cheap on every decoding step) equal triton.cdiv and
    triton.next_power_of_2 with the lower bound applied."""
    import triton

    from assocmem.ops.delta_rule.triton.chunk import _cdiv, _pow2

    for n in range(0, 600):
        assert _pow2(n) == max(16, triton.next_power_of_2(n)) and _pow2(n, 8) == max(8, triton.next_power_of_2(n))
        for b in (1, 16, 64):
            assert _cdiv(n, b) == triton.cdiv(n, b)


@pytest.mark.parametrize("B, T, H, K, V, packed", [(2, 100, 2, 32, 16, False), (1, 63, 1, 60, 100, False),
                                                   (1, 64, 1, 128, 16, False), (1, 140, 2, 32, 16, True)])  # fmt: skip
def test_fused_wy_backward_matches_naive_fp32(B, T, H, K, V, packed, monkeypatch):
    """chunk.FUSED_WY_BWD (dqkw and wy_bwd as one kernel): the float32 gradients against naive.py, also with
    K != V, K not a power of two and packed sequences."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {16: True, 32: True, 64: True, 128: True})
    assert not tchunk._fused_wy_bwd(128, torch.float32)  # over the H200's shared memory: not taken
    # The interpreter has no shared-memory limit: the float32 math is checked up to K = 128 there (on a GPU
    # K = 128 runs the two kernels).
    if DEVICE.type == "cpu":
        monkeypatch.setattr(tchunk, "FUSED_MAX_K_FP32", 128)
    assert tchunk._fused_wy_bwd(K, torch.float32) == (K <= tchunk.FUSED_MAX_K_FP32) and not tchunk._fused_wy_bwd(256)
    cu = torch.tensor([0, 5, 5, 69, 139, 140]) if packed else None
    check_fp32("triton", B, T, H, K, V, cu_seqlens=cu)


@pytest.mark.parametrize("K, V, tile", [(64, 32, 64), (128, 64, 32)])
def test_fused_wy_backward_low_precision_and_close_to_the_unfused(K, V, tile, monkeypatch):
    """In bf16 the fused backward keeps STYLE's bounds and differs from the two-kernel one with float32 dW and
    dK parts (chunk.HALF_DW off: the fused kernel keeps them in registers) only by the order of float32 sums
    (at K = 128 with its default value tile of 32)."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_DW", False)
    inputs = on_device(make_inputs(1, 128, 2, K, V, torch.bfloat16))
    do, dstate = torch.randn(1, 128, 2, V, device=DEVICE), torch.randn(1, 2, K, V, device=DEVICE)
    _, _, g_two = grads(run("triton"), leaves(*inputs), do, dstate)
    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {K: True})
    assert tchunk._fused_wy_bwd(K) and tchunk._fused_tile_v(K, V) == tile
    _, _, g_fused = grads(run("triton"), leaves(*inputs), do, dstate)
    for name, a, b in zip(NAMES, g_fused, g_two):
        assert rel_err(a.float(), b.float()) < 2e-3, name
    check_low_precision(torch.bfloat16, 1, 128, 2, K, V)


def test_bfloat16_casts_and_products_inside_kernels_match_torch():
    """What the kernels' bf16 rounding does (under the interpreter after _teach_the_interpreter_bfloat16, on a
    GPU natively): float32 -> bf16 rounds to nearest even like torch, ties and the carry into the exponent
    included, and a bf16 product is exact in float32."""
    import triton
    import triton.language as tl

    @triton.jit
    def cast_and_dot(x, y, z, N: tl.constexpr):
        r = tl.arange(0, N)
        v = tl.load(x + r[:, None] * N + r[None, :])
        h = v.to(tl.bfloat16)
        tl.store(y + r[:, None] * N + r[None, :], h.to(tl.float32))
        tl.store(z + r[:, None] * N + r[None, :], tl.dot(h, h))

    N = 16
    x = torch.randn(N, N)
    # ties (to even, down and up), a carry into the exponent, a negative tie
    x[0, :4] = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, 2 - 2**-9, -(1 + 2**-8)])
    x, y, z = x.to(DEVICE), torch.empty(N, N, device=DEVICE), torch.empty(N, N, device=DEVICE)
    cast_and_dot[(1,)](x, y, z, N)
    h = x.to(torch.bfloat16).float()
    assert torch.equal(y, h)
    assert torch.allclose(z, h @ h, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("fused, keep", [(False, False), (True, False), (False, True)])
def test_bf16_vprime_storage_within_twice_the_reference_error(fused, keep, monkeypatch):
    """chunk.HALF_VPRIME: V' and dV' stored in bf16 between the kernels (bf16 inputs), with dqkw and wy_bwd
    as two kernels or fused, and with the forward keeping the states; the gradients stay within the bounds."""
    from assocmem.ops.delta_rule.triton import chunk as tchunk

    monkeypatch.setattr(tchunk, "HALF_VPRIME", True)
    monkeypatch.setattr(tchunk, "FUSED_WY_BWD", {64: fused})
    monkeypatch.setattr(tchunk, "KEEP_STATES", keep)
    assert tchunk._vprime_dtype(torch.bfloat16) == torch.bfloat16
    assert tchunk._vprime_dtype(torch.float16) == torch.float32
    check_low_precision(torch.bfloat16, 1, 128, 2, 64, 64)


def test_smem_check_compiles_as_a_launch_does_so_stages_take_shared_memory():
    """scripts/smem_check.py compiles the kernels for sm_90 on a machine without a GPU (in a process without
    the interpreter). It gives the compiler a launch's hints (16-byte aligned pointers, T a multiple of 16) and
    the buffers' stored dtypes: then the training forward's state pass keeps a buffer per pipeline stage, so
    three stages take more shared memory than one, as on the H200 (188 KB against 57 KB with Triton 3.6).
    Without the hints no load was pipelined and every stage count gave the same figure."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    code = (
        "import sys; sys.path.insert(0, 'scripts'); import smem_check\n"
        "for name, fn, types, consts in smem_check.launches(128, 128, 'bf16'):\n"
        "    if name == 'state_fwd(train)':\n"
        "        consts = {k: v for k, v in consts.items() if k in fn.arg_names}\n"
        "        print(*(smem_check.compile_(fn, types, consts, 4, s).metadata.shared for s in (1, 3)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0 and "ptxas" in out.stderr:
        pytest.skip(f"this Triton cannot compile for sm_90 here: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-2000:]
    one, three = (int(x) for x in out.stdout.split())
    assert three > one + 64 * 1024  # at least k, q, v, A and P for two more stages
