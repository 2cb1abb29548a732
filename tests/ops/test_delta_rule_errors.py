"""Every bad input to delta_rule gets an error that names the argument and what was expected."""

import importlib
import types
import warnings

import pytest
import torch

from assocmem import delta_rule

from .helpers import make_inputs

delta_rule_pkg = importlib.import_module("assocmem.ops.delta_rule")


def good(**changes):
    q, k, v, beta, h0 = make_inputs(1, 20, 2, 8, 4)
    args = dict(q=q, k=k, v=v, beta=beta, initial_state=h0)
    args.update(changes)
    return args


def call(args, **kw):
    return delta_rule(args.pop("q"), args.pop("k"), args.pop("v"), args.pop("beta"), **args, **kw)


CASES = [
    ("q not a tensor", dict(q=[1.0]), TypeError, r"`q` must be a torch.Tensor"),
    ("integer k", dict(k=torch.zeros(1, 20, 2, 8, dtype=torch.int64)), TypeError, r"`k` must be float16"),
    ("q 3-D", dict(q=torch.zeros(20, 2, 8)), ValueError, r"`q` must be 4-D \[B, T, H, K\], got shape \[20, 2, 8\]"),
    (
        "k shape",
        dict(k=torch.zeros(1, 20, 2, 7)),
        ValueError,
        r"`k` must have q's shape .*\[1, 20, 2, 8\], got \[1, 20, 2, 7\]",
    ),
    ("v shape", dict(v=torch.zeros(1, 19, 2, 4)), ValueError, r"`v` must have shape \[B, T, H, V\] = \[1, 20, 2, V\]"),
    (
        "beta shape",
        dict(beta=torch.zeros(1, 20, 2, 1)),
        ValueError,
        r"`beta` must have shape \[B, T, H\] = \[1, 20, 2\]",
    ),
    ("mixed dtypes", dict(v=torch.zeros(1, 20, 2, 4, dtype=torch.bfloat16)), TypeError, r"must share one dtype"),
    (
        "state shape",
        dict(initial_state=torch.zeros(1, 2, 8, 5)),
        ValueError,
        r"`initial_state` must have shape \[N, H, K, V\] = \[1, 2, 8, 4\], got \[1, 2, 8, 5\]",
    ),
    (
        "state dtype",
        dict(initial_state=torch.zeros(1, 2, 8, 4, dtype=torch.int32)),
        TypeError,
        r"`initial_state` must be a float tensor",
    ),
    ("state not tensor", dict(initial_state=0.0), TypeError, r"`initial_state` must be a torch.Tensor or None"),
    (
        "zero head size",
        dict(q=torch.zeros(1, 20, 2, 0), k=torch.zeros(1, 20, 2, 0), initial_state=None),
        ValueError,
        r"head sizes must be positive",
    ),
    ("scale", dict(scale=float("nan")), TypeError, r"`scale` must be a finite number"),
    ("backend", dict(backend="cuda-magic"), ValueError, r"`backend` must be one of .*'cuda-magic'"),
    ("chunk size", dict(chunk_size=48), ValueError, r"`chunk_size` must be one of \(16, 32, 64, 128\), got 48"),
]


@pytest.mark.parametrize("name, changes, exc, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, changes, exc, match):
    with pytest.raises(exc, match=match):
        call(good(**changes))


CU_CASES = [
    ("float cu_seqlens", torch.tensor([0.0, 20.0]), TypeError, r"`cu_seqlens` must be int32 or int64"),
    ("2-D cu_seqlens", torch.tensor([[0, 20]]), ValueError, r"`cu_seqlens` must be 1-D \[N \+ 1\]"),
    ("not starting at 0", torch.tensor([1, 20]), ValueError, r"`cu_seqlens` must start at 0, got 1"),
    (
        "non-monotone",
        torch.tensor([0, 12, 5, 20]),
        ValueError,
        r"`cu_seqlens` must be non-decreasing, got \[0, 12, 5, 20\]",
    ),
    ("T mismatch", torch.tensor([0, 10, 19]), ValueError, r"`cu_seqlens\[-1\]` must equal T = 20 .*got 19"),
    ("not a tensor", [0, 20], TypeError, r"`cu_seqlens` must be a torch.Tensor or None"),
]


@pytest.mark.parametrize("name, cu, exc, match", CU_CASES, ids=[c[0] for c in CU_CASES])
def test_bad_cu_seqlens(name, cu, exc, match):
    with pytest.raises(exc, match=match):
        call(good(initial_state=None), cu_seqlens=cu)


def test_cu_seqlens_needs_batch_one():
    q, k, v, beta, _ = make_inputs(2, 20, 2, 8, 4, state=False)
    with pytest.raises(ValueError, match=r"batch size must be 1 .*got B = 2"):
        delta_rule(q, k, v, beta, cu_seqlens=torch.tensor([0, 20]))


def test_state_count_follows_cu_seqlens():
    with pytest.raises(ValueError, match=r"`initial_state` must have shape \[N, H, K, V\] = \[3, 2, 8, 4\]"):
        call(good(), cu_seqlens=torch.tensor([0, 5, 10, 20]))


def _fake(device="cuda", dtype=torch.float32, K=64):
    return types.SimpleNamespace(device=torch.device(device), dtype=dtype, shape=(1, 8, 2, K))


def test_auto_on_cuda_announces_each_fallback_once(monkeypatch):
    monkeypatch.setattr(delta_rule_pkg, "_announced_fallback", set())
    monkeypatch.setattr(delta_rule_pkg._triton, "available", lambda device: False)
    with pytest.warns(UserWarning, match="Triton is not installed; backend='auto' uses the PyTorch chunk"):
        assert delta_rule_pkg._pick_backend("auto", _fake(), _fake()) == "chunk"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert delta_rule_pkg._pick_backend("auto", _fake(), _fake()) == "chunk"
        assert delta_rule_pkg._pick_backend("auto", _fake("cpu"), _fake("cpu")) == "chunk"


def test_auto_on_cuda_picks_triton_where_the_kernels_apply(monkeypatch):
    monkeypatch.setattr(delta_rule_pkg, "_announced_fallback", set())
    monkeypatch.setattr(delta_rule_pkg._triton, "available", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            assert delta_rule_pkg._pick_backend("auto", _fake(dtype=dtype), _fake(K=128)) == "triton"
        assert delta_rule_pkg._pick_backend("naive", _fake(), _fake()) == "naive"
    with pytest.warns(UserWarning, match="float64"):
        assert delta_rule_pkg._pick_backend("auto", _fake(dtype=torch.float64), _fake()) == "chunk"
        assert delta_rule_pkg._pick_backend("auto", _fake(), _fake(K=256)) == "triton"
    with pytest.warns(UserWarning, match="head sizes up to 256"):
        assert delta_rule_pkg._pick_backend("auto", _fake(), _fake(K=320)) == "chunk"


def test_triton_backend_on_cpu_says_what_runs_there(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="backend='triton' needs Triton and a CUDA device.*'chunk' runs anywhere"):
        call(good(), backend="triton")


def test_triton_backend_rejects_what_its_kernels_do_not_take(monkeypatch):
    monkeypatch.setattr(delta_rule_pkg._triton, "available", lambda device: True)
    args = good()
    q, k, v, beta = args["q"], args["k"], args["v"], args["beta"]
    with pytest.raises(
        TypeError, match="backend='triton_recurrent' takes float32, bfloat16 or float16 `q`, got float64"
    ):
        delta_rule(q.double(), k.double(), v.double(), beta.double(), backend="triton_recurrent")
    big = torch.randn(*q.shape[:3], 260)
    with pytest.raises(ValueError, match="head sizes up to 256, got K = 260.*'chunk' takes any"):
        delta_rule(big, big, v, beta, backend="triton")
    wide = torch.randn(*q.shape[:3], 512).bfloat16()
    with pytest.raises(ValueError, match="head sizes up to 256, got K = 8, V = 512"):
        delta_rule(q.bfloat16(), k.bfloat16(), wide, beta, backend="triton")
    with pytest.raises(ValueError, match="uses chunks of 64, got `chunk_size` = 32"):
        delta_rule(q, k, v, beta, backend="triton", chunk_size=32)
