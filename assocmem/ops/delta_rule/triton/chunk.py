"""Host side of the Triton chunk kernels: buffers, grids, the autograd Function.

Forward: two kernels (the WY representation's A per chunk, with P = scale tril(Q K^T) where STORE_P; the state
recurrence fused with the output, applying A), so an inference forward writes neither the per-chunk states, V',
nor W and U. A training forward keeps A (bf16 for bf16 inputs: HALF_A), P and, by default, the chunk-start
states and V' for the backward (KEEP_STATES; where its state tile is narrower than 64 it writes them and forms
the output in a parallel kernel: SPLIT_OUTPUT). Backward: three kernels (the reverse state pass, which forms the
chunk-local part of dV' from P; dQ/dK/dW per chunk; the WY backward), one more where P was not stored (the
local dV') and where it recomputes the states; with FUSED_WY_BWD the last two are one. Head sizes up to 256,
on tiles at least MIN_TILE wide.
"""

import functools
import json
import os
from pathlib import Path

import torch

from . import kernels, on_input_device
from .kernels import BT

# Launch options per kernel, with overrides per padded head size K (measured on an H200: NOTES.md).
# The state kernels pipeline [64, K] tiles of the sequence through shared memory, one buffer per stage:
# float32 inputs (twice the bytes) leave room for one stage at K >= 128 within the H200's 227 KiB per
# block (scripts/smem_check.py compiles every kernel for sm_90 and prints its use).
# At K = 128: the choices of the version-8 sweep (benchmarks/results/triton_sweep_v8.json), which took
# forward+backward from 4.28 to 3.55 ms at T = 4096 (NOTES.md, version 8).
LAUNCH_BY_K: dict[tuple[str, int], dict] = {
    ("state_fwd", 256): {"num_warps": 4, "num_stages": 2},
    ("dv_local", 128): {"num_warps": 4, "num_stages": 3},
    ("dqkw", 128): {"num_warps": 4, "num_stages": 2},
    ("dqkw", 256): {"num_warps": 4, "num_stages": 2},  # version-10 sweep at D = 256
    ("wy_bwd", 128): {"num_warps": 4, "num_stages": 1},
    ("dqkw_wy", 64): {"num_warps": 4, "num_stages": 1},  # version 19: 1.74 ms against 2.28 with 8 warps (D = 64)
}
# The WY forward at K = 128 with float32 inputs: 1 stage took 0.572 against 0.619 ms with 2 on the H200 (D = 128,
# T = 2048, with P; benchmarks/results/wy_fwd_v17b_fp32.json).
FP32_MAX_STAGES = {("state_fwd", 128): 1, ("state_bwd", 128): 1, ("state_fwd", 256): 1, ("state_bwd", 256): 1,
                   ("wy_fwd", 128): 1, ("state_wu", 128): 1, ("state_wu", 256): 1, ("state_wu_o", 128): 1}  # fmt: skip
LAUNCH = {
    "wy_fwd": {"num_warps": 4, "num_stages": 2},
    "state_fwd": {"num_warps": 4, "num_stages": 3},
    "dv_local": {"num_warps": 4, "num_stages": 1},
    "state_bwd": {"num_warps": 4, "num_stages": 2},
    "dqkw": {"num_warps": 4, "num_stages": 1},
    "wy_bwd": {"num_warps": 4, "num_stages": 2},
    "dqkw_wy": {"num_warps": 8, "num_stages": 1},
    "output": {"num_warps": 4, "num_stages": 2},
    # The WY forward that also writes W and U (PIPELINE_WU): with 2 stages its sm_90 build takes 204 registers a
    # thread (two blocks per SM), with 1 stage 166 (three, as the plain WY forward); forward+backward at D = 128,
    # T = 16384 2.388 / 2.309 ms (benchmarks/results/ab_v21f.json, one run).
    "wy_fwd_wu": {"num_warps": 4, "num_stages": 1},
    "state_wu": {"num_warps": 4, "num_stages": 3},
    "state_wu_o": {"num_warps": 4, "num_stages": 3},
    "w": {"num_warps": 4, "num_stages": 2},
}



# A training forward keeps the chunk-start states and V' for the backward instead of its recomputing them (one
# sequential pass). The cost per token, head and value channel: V' (2 bytes for bf16 inputs, else 4) plus a
# [K, V] state per 64 tokens (bf16 for bf16 inputs): at D = 128 in bf16 768 bytes per token and head, as much
# as q, k and v together. KEEP_STATES (the default since version 12; ASSOCMEM_TRITON_KEEP_STATES=0 at import
# turns it off) keeps them always: on the H200 forward+backward at D = 128, T = 4096 took 2.54 against 2.79 ms
# recomputing (NOTES.md, version 12). Off, they are still kept where sequences x heads leave the state passes
# with at most half as many programs (64-wide value tiles) as the device has SMs, where the recompute's chain
# is long (KEEP_FEW_PROGRAMS): at T = 16384, B = 2 forward+backward went 3.81 -> 3.53 ms (D = 64),
# 3.78 -> 3.59 (D = 128), 5.02 -> 4.53 (D = 256) in version 10. The keeping forward takes the recompute's bf16
# operand bits (HALF_OPERANDS["state_recompute"]), so its gradients equal the recomputing backward's.
KEEP_STATES = os.environ.get("ASSOCMEM_TRITON_KEEP_STATES", "1") == "1"
KEEP_FEW_PROGRAMS = True


def _keep_states(sequences_x_heads: int, V: int, device) -> bool:
    if KEEP_STATES:
        return True
    return KEEP_FEW_PROGRAMS and _sm_share(sequences_x_heads, V, device) <= 0.5


def _sm_share(sequences_x_heads: int, V: int, device) -> float:
    """Programs of a state pass with 64-wide value tiles per SM of `device`: below 1 the sequential chains
    leave SMs idle (the state kept for the backward, and K = 256's tile width, follow it)."""
    return sequences_x_heads * _cdiv(V, 64) / _sm_count(device)


def _max_chunks(B: int, T: int, cu_seqlens) -> int:
    """Chunks of the batch (equal lengths), or an upper bound that needs no look at the lengths (packed:
    each sequence adds at most one partial chunk), so that a compiled graph knows the states' shape."""
    return B * _cdiv(T, BT) if cu_seqlens is None else T // BT + cu_seqlens.shape[0] - 1


# V' and dV' between the kernels: float32, or bf16 for bf16 inputs with HALF_VPRIME (half the traffic of those
# two buffers, which four kernels of the backward read or write; fla keeps them in bf16). On by default since
# the H200 sweep of version 9 (forward+backward 3.15 -> 2.88 ms at D = 128, T = 4096); ASSOCMEM_TRITON_HALF_VPRIME=0
# turns it off at import.
HALF_VPRIME = os.environ.get("ASSOCMEM_TRITON_HALF_VPRIME", "1") == "1"


def _vprime_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if HALF_VPRIME and dtype == torch.bfloat16 else torch.float32


def _store_dtype(dtype: torch.dtype) -> torch.dtype:
    """Storage of the chunk states and their gradients (and of P) between the kernels: bf16 for bf16
    inputs (half the traffic of the largest buffers; the matmuls that read them accumulate in float32),
    float32 otherwise (fp16's range is too small for states). V' and dV': _vprime_dtype (NOTES.md, v5, v9)."""
    return torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


# Where the kernels round float32 intermediates to bf16 as they enter a matmul (bf16 inputs only; float32
# accumulation), as bit masks. state_fwd (the forward that stores no states; state_recompute where it does):
# 1: S in K S and Q S; 2: A and beta (V - K S) in their product; 4: V' and tril(Q K^T) in the products with
# V'. state_bwd 1: dS and beta A^T dV' into the two products with K; 2: A and dV' in A^T dV' (version 10).
# dqkw 1: V' in dP = dO V'^T; 2: V' in V' dS^T; 4: dV' in dV' S^T; 8: dP in dP K and dP^T Q. wy_bwd (also the fused
# dqkw_wy's WY part) 1: A^T dW and A^T dU; 2: the products of dL = -A^T dA A^T; 4: dL K and dL^T (beta K);
# 8: dW (beta K)^T and dU (beta V)^T.
# Errors (scripts/triton_errors.py under the interpreter taught to round to nearest even as the GPU does,
# T = 128 / 256; benchmarks/results/triton_errors_cpu_v9.log; bound 1e-2): these defaults 3.4e-3 at most
# (output), every bit of all four kernels on 4.5e-3 at most. On the H200 the forward's three bits (the
# default since version 8: the fastest forward, 0.62 against 0.69 ms with bit 1 at D = 128) measured
# 4.3-4.5e-3 against the float32 PyTorch path at D = 64 and 128 (fla 4.8-5.1e-3). The backward's bits: every
# bit of dqkw and wy_bwd since version 9's H200 sweep (forward+backward 3.54 -> 3.15 ms at D = 128, T = 4096;
# gradients 4.3-4.6e-3 from the float32 path, fla 5.6-6.4e-3). Earlier versions chose bits under an interpreter
# that truncated (twice the rounding error; NOTES.md, version 9).
# state_recompute: state_fwd's bits where it stores the chunk-start states and V' for the backward (the
# backward's recomputing pass, and a forward with KEEP_STATES, so that kept and recomputed states agree); the
# output bit 4 rounds V' in the state update K^T V' there too. Version 10 (NOTES.md): the H200 sweep chose bits
# 1 and 2 there and state_bwd's bit 2 (forward+backward at D = 128, T = 4096 plus T = 16384: 6.94 -> 6.44 ms);
# version 12's two sweeps bit 4 too (6.23 -> 6.03 and 6.28 -> 6.11 ms; the outputs 4.9e-3 from the defaults').
HALF_OPERANDS = {"state_fwd": 1 | 2 | 4, "state_recompute": 1 | 2 | 4, "state_bwd": 1 | 2, "dqkw": 15, "wy_bwd": 15}


def _half_operands(name: str, dtype: torch.dtype, K: int = 64, BV: int = 64) -> int:
    bits = int(HALF_OPERANDS[name]) if dtype == torch.bfloat16 else 0
    if name in ("state_fwd", "state_recompute") and BV < 64:
        # On the H200 (Triton 3.6) bits 2 and 4 gave NaN in every other output column at value tiles of 32
        # (K = 64, V = 32; the interpreter computes them right): those tiles keep A, V' and tril(QK^T) in float32.
        bits &= ~(2 | 4)
    if name == "dqkw" and _dqkw_tile_k(K) < 64:
        # Triton 3.6 miscompiles dqkw's bf16 dP^T Q at key tiles below 64 on the H200 (compute-sanitizer:
        # an out-of-bounds shared-memory read inside the dot); those heads keep dP in float32.
        bits &= ~8
    return bits


# Host-side integer helpers in plain Python: triton.cdiv and triton.next_power_of_2 are Triton functions whose
# every call costs microseconds in recent Triton versions, and a decoding step calls these several times.
def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(n - 1, 0).bit_length())


# The narrowest tile of the chunk kernels: key and value sizes below it are padded (masked loads and stores).
# On the H200 (Triton 3.6) bf16 gradients came out wrong where a head's key or value size made a tile narrower
# than 64 (dV and dbeta at V = 32 and V = 16, an illegal memory access at K = 32, V = 16; NOTES.md, version 14),
# while the interpreter computes them right; 64-wide tiles there cost compute only on heads that small.
# ASSOCMEM_TRITON_MIN_TILE at import (16 for the unpadded tiles).
MIN_TILE = int(os.environ.get("ASSOCMEM_TRITON_MIN_TILE", "64"))


def _width(n: int) -> int:
    """The padded tile size of a key or value size n in the chunk kernels."""
    return _pow2(n, MIN_TILE)


# Launches over an H200 SM's shared memory (232,448 bytes a block) at more stages, in any dtype
# (scripts/smem_check.py): the pass from W and U with its output at K = 256 takes 352,256 bytes with 3 stages
# and 241,664 with 2.
MAX_STAGES = {("state_wu_o", 256): 1}


def _launch(name: str, K: int, dtype: torch.dtype = torch.bfloat16) -> dict:
    key = (name, _width(K))
    options = dict(LAUNCH_BY_K.get(key, LAUNCH[name]))
    if dtype == torch.float32 and key in FP32_MAX_STAGES:
        options["num_stages"] = min(options["num_stages"], FP32_MAX_STAGES[key])
    if key in MAX_STAGES:
        options["num_stages"] = min(options["num_stages"], MAX_STAGES[key])
    return options


def _precision(dtype: torch.dtype) -> str:
    """float32 inputs: three TF32 passes (about float32 accuracy on tensor cores); exact IEEE matmuls of
    large tiles unroll into FMA code that takes minutes to compile."""
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _num_sequences(B: int, cu_seqlens) -> int:
    return B if cu_seqlens is None else cu_seqlens.shape[0] - 1


# Key tile of `dqkw` per padded K: each tile re-reads V', dV' and dO; one tile per head needs 8 warps.
DQKW_TILE_K = {16: 16, 32: 32, 64: 64, 128: 64, 256: 64}


def _dqkw_tile_k(K: int) -> int:
    return DQKW_TILE_K[_width(K)]


# Value tile of `dqkw` and the key/value tile of `wy_bwd` per padded K, where a measurement chose one
# (sweep); else 64. Tiles of 32 with 8 warps keep both kernels within 255 registers per thread at K >= 128
# (scripts/smem_check.py reads the registers and spills of an sm_90 build: NOTES.md, version 7).
# At K = 128 the WY backward takes the whole key and value size in one tile (version 15, measured on the H200:
# forward+backward at D = 128 2.08 -> 1.99 ms at T = 2048 and 4096 with 4 warps, 1 stage, and 2.24 ms with 8 warps,
# benchmarks/results/ab_v15b.json; 2.07 -> 1.98 and at T = 16384 2.63 -> 2.54 ms in ab_v15.json), although an sm_90
# build spills more (3,368 bytes a thread against 1,520).
DQKW_TILE_V: dict[int, int] = {}
WY_BWD_TILE: dict[int, int] = {128: 128}


def _dqkw_tile_v(K: int, V: int) -> int:
    return min(DQKW_TILE_V.get(_width(K), 64), _width(V))


def _wy_bwd_tiles(K: int, V: int) -> tuple[int, int]:
    tile = WY_BWD_TILE.get(_width(K), 64)
    return min(tile, _width(K)), min(tile, _width(V))


# `dqkw` and `wy_bwd` as one kernel (`dqkw_wy`, one program per chunk and head, the whole key size in one
# tile), per padded K up to FUSED_MAX_K: dW and dK's first part stay in registers instead of a round trip
# through memory and dV' is read once. On at K = 64 for bf16 inputs (version 19, the H200 with 4 warps:
# forward+backward at D = 64 1.97 -> 1.74 ms at T = 2048, 2.10 -> 1.89 at 8192, 2.38 -> 2.27 at 16384;
# benchmarks/results/ab_v19j.json). At K = 128 slower (1.91 -> 2.23 ms with 8 warps, 2.80 with 4: its registers
# spill; ab_v19d.json, ab_v19f.json), as version 9 had found. A value of True takes it for every dtype within
# the limits below, "bf16" for bf16 inputs only (float32 and fp16 were not timed).
# ASSOCMEM_TRITON_FUSED_WY_BWD=1 turns it on at import for every K it can take, =0 off everywhere.
# Shared memory (scripts/smem_check.py, sm_90): float32 inputs at K = 128 need 229 KB with 4 warps, over the
# limit with 8, so float32 (and fp16, whose chunk states are float32) takes the fused kernel up to K = 64
# only. Its value tile per padded K: at K = 128 (bf16) a tile of 32 with 8 warps spills the least (760 bytes
# per thread against 1,528 at 64).
FUSED_MAX_K = 128
FUSED_MAX_K_FP32 = 64
_FUSED_ENV = os.environ.get("ASSOCMEM_TRITON_FUSED_WY_BWD", "")
FUSED_WY_BWD: dict[int, bool | str] = (
    {K: True for K in (16, 32, 64, 128)} if _FUSED_ENV == "1" else {} if _FUSED_ENV == "0" else {64: "bf16"}
)
FUSED_TILE_V: dict[int, int] = {128: 32}


def _fused_wy_bwd(K: int, dtype: torch.dtype = torch.bfloat16) -> bool:
    limit = FUSED_MAX_K if dtype == torch.bfloat16 else FUSED_MAX_K_FP32  # fp16 keeps float32 states too
    chosen = FUSED_WY_BWD.get(_width(K), False)
    return _width(K) <= limit and (dtype == torch.bfloat16 if chosen == "bf16" else bool(chosen))


def _fused_tile_v(K: int, V: int) -> int:
    return min(FUSED_TILE_V.get(_width(K), 64), _width(V))


# Value tile of the sequential kernels per (kernel, padded K), where a measurement chose one (sweep).
STATE_TILE_V: dict[tuple[str, int], int] = {("state_bwd", 128): 32}  # version-8 sweep


def _state_tile_v(K: int, V: int, name: str = "state_fwd", dtype=None, heads: int | None = None, device=None,
                  keeps: bool = True) -> int:
    """Value tile of the sequential kernels: the [K, BV] float32 state stays in registers. (Narrower tiles
    for more programs when sequences are few made both state kernels slower on the H200 in version 2:
    NOTES.md.) At K = 256 the tile is 32 wide, which keeps the state at 64 registers per thread of four warps;
    the forward's 64-wide tile there (WIDE_STATE_K256, bf16 inputs, `heads` = sequences x heads given) is
    taken by a forward that keeps nothing for a backward (not `keeps`) always, and by one that keeps the states
    only where `heads` give at least three quarters of the SMs of `device` a program."""
    key = (name, _width(K))
    if key in STATE_TILE_V:  # a sweep's choice (load_tuned) before the rule
        tile = STATE_TILE_V[key]
    elif K > 128 and name == "state_fwd" and dtype == torch.bfloat16 and heads is not None and WIDE_STATE_K256:
        tile = 64 if not keeps or _sm_share(heads, V, device) >= 0.75 else 32
    else:
        tile = 64 if K <= 128 else 32
    return min(tile, _width(V))


# The forward's state pass at K = 256 with 64-wide value tiles (bf16; version 10's H200 sweep: forward 1.45 ->
# 0.87 ms at D = 256, T = 4096, B = 8, H = 8; 1.45 -> 0.86 at T = 8192, B = 4, 128 programs for 132 SMs),
# where the programs nearly fill the SMs (at T = 16384, B = 2: 64 programs, the 64-wide tile measured slower:
# 1.52 against 1.48 ms). Since P (version 14) the forward that keeps nothing gains from it at 64 programs too
# (version 16, ab_v16_t64.json: 1.363 -> 1.169 ms at T = 16384), while the keeping forward of training does not
# (forward+backward 3.344 -> 3.401 ms there, ab_v16_t64train.json): see _state_tile_v's `keeps`.
WIDE_STATE_K256 = True


_SM_COUNTS: dict[int, int] = {}


# A compiled graph takes the count as a constant (the autograd Function's forward asks for it): torch.compile
# calls this at tracing time instead of tracing the device query.
@torch.compiler.assume_constant_result
def _sm_count(device) -> int:
    if device.type != "cuda":
        return 1
    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


def load_tuned(path: str | Path) -> None:
    """Apply the launch settings that scripts/sweep_triton.py chose and wrote ({D: {"chosen": {kernel:
    {"num_warps", "num_stages", and "tile_k" / "tile_v" / "tile" where it tried them}}}}); set by the environment
    variable ASSOCMEM_TRITON_TUNED=path at import, so a benchmark can run with a sweep's result."""
    global KEEP_STATES, HALF_VPRIME, HALF_A, HALF_DW
    report = json.loads(Path(path).read_text())
    for D, entry in report.items():
        K = _width(int(D))
        chosen_all = dict(entry.get("chosen", {}))
        if "keep_states" in chosen_all:  # settings for every head size (the sweep takes them at D = 128)
            KEEP_STATES = bool(chosen_all.pop("keep_states"))
        if "fused_wy_bwd" in chosen_all:
            FUSED_WY_BWD[K] = bool(chosen_all.pop("fused_wy_bwd"))
        for name in ("state_fwd", "state_recompute", "state_bwd"):
            if f"{name}_half_operands" in chosen_all:
                HALF_OPERANDS[name] = int(chosen_all.pop(f"{name}_half_operands"))
        if "half_vprime" in chosen_all:
            HALF_VPRIME = bool(chosen_all.pop("half_vprime"))
        if "half_a" in chosen_all:
            HALF_A = bool(chosen_all.pop("half_a"))
        if "half_dw" in chosen_all:
            HALF_DW = bool(chosen_all.pop("half_dw"))
        for name, bits in chosen_all.pop("backward_half_operands", {}).items():
            if name not in HALF_OPERANDS:
                raise ValueError(f"load_tuned: unknown kernel {name!r} in backward_half_operands of {path}")
            HALF_OPERANDS[name] = int(bits)
        for name, chosen in chosen_all.items():
            if name not in LAUNCH:
                raise ValueError(f"load_tuned: unknown kernel {name!r} in {path}; expected one of {sorted(LAUNCH)}")
            LAUNCH_BY_K[(name, K)] = {"num_warps": int(chosen["num_warps"]), "num_stages": int(chosen["num_stages"])}
            if "tile_k" in chosen:
                DQKW_TILE_K[K] = int(chosen["tile_k"])
            if "tile_v" in chosen:
                if name == "dqkw":
                    DQKW_TILE_V[K] = int(chosen["tile_v"])
                elif name == "dqkw_wy":
                    FUSED_TILE_V[K] = int(chosen["tile_v"])
                else:
                    STATE_TILE_V[(name, K)] = int(chosen["tile_v"])
            if "tile" in chosen:
                WY_BWD_TILE[K] = int(chosen["tile"])


class _Chunks:
    """Chunk bookkeeping for equal-length batches or packed sequences (`cu_seqlens`)."""

    def __init__(self, B: int, T: int, cu_seqlens: torch.Tensor | None):
        self.varlen = cu_seqlens is not None
        self.cu_seqlens = cu_seqlens
        if cu_seqlens is None:
            self.N, per = B, _cdiv(T, BT)
            self.grid_t, self.total = per, B * per
            self.index = self.offsets = None
        else:
            lens = cu_seqlens[1:] - cu_seqlens[:-1]
            n_chunks = (lens + BT - 1) // BT
            offsets = torch.zeros(len(lens) + 1, dtype=torch.int64, device=cu_seqlens.device)
            offsets[1:] = torch.cumsum(n_chunks, 0)
            self.N, self.total = len(lens), int(offsets[-1])
            seq = torch.repeat_interleave(torch.arange(self.N, device=cu_seqlens.device), n_chunks)
            local = torch.arange(self.total, device=cu_seqlens.device) - offsets[seq]
            self.index = torch.stack([seq, local], 1).to(torch.int32).contiguous()
            self.offsets = offsets.to(torch.int32)
            self.grid_t = self.total


# A stored in bf16 for bf16 inputs (version 12; ASSOCMEM_TRITON_HALF_A=0/1 at import): half the bytes of the
# WY forward's only output, which the forward's state pass, the backward's recompute, the reverse pass and the
# WY backward each read again. Taken only where every kernel that reads A rounds it to bf16 as it enters a
# matmul anyway (the HALF_OPERANDS bits below, all on by default): then it changes no result, except at state
# tiles narrower than 64, where the state pass drops its bit 2 (_half_operands) and A's rounding is new
# (under the interpreter the output's error went 2.85e-3 -> 2.87e-3 at V = 32: triton_errors_cpu_v12.log).
HALF_A = os.environ.get("ASSOCMEM_TRITON_HALF_A", "1") == "1"
_A_BITS = {"state_fwd": 2, "state_recompute": 2, "state_bwd": 2, "wy_bwd": 1 | 2}  # the bits that round A


def _half_a(dtype: torch.dtype) -> bool:
    return HALF_A and dtype == torch.bfloat16 and all(HALF_OPERANDS[n] & b == b for n, b in _A_BITS.items())


def _a_dtype(half_a: bool) -> torch.dtype:
    return torch.bfloat16 if half_a else torch.float32


# dW and dK's output/state part, which `dqkw` writes and the WY backward reads, stored in bf16 for bf16 inputs
# (version 12; ASSOCMEM_TRITON_HALF_DW=0/1 at import), as fla stores them: half of the largest buffers between
# the two kernels. dW's two products in the WY backward round it to bf16 already (wy_bwd bits 1 and 8); dK's
# part is one more rounding before its sum.
HALF_DW = os.environ.get("ASSOCMEM_TRITON_HALF_DW", "1") == "1"


def _dw_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if HALF_DW and dtype == torch.bfloat16 else torch.float32


# P = scale tril(Q K^T) per chunk, formed by the WY forward and stored (version 14; 64 numbers per token and
# head, stored as the chunk states are) for the state passes: the forward's runs one program per value tile,
# each of which formed the [64, 64] product (K multiply-adds per entry) beside its chain, and the reverse pass
# takes the chunk-local part of dV', P^T dO, from it in place of the separate dv_local kernel. For a training
# forward (`train`) and an inference forward separately: "1" stores P, "0" does not, "auto" (default) stores it
# for training always and for inference at K > 128 only (ASSOCMEM_TRITON_STORE_P_TRAIN / _INFER at import).
# Measured on the H200 (NOTES.md, version 14; benchmarks/results/ab_v14.json): forward+backward at T = 4096
# D = 64 2.13 -> 2.07 ms, D = 128 2.32 -> 2.08, D = 256 3.46 -> 2.85; the inference forward slower at D = 64
# (0.70 -> 0.84 ms) and 128 (0.59 -> 0.62), faster at D = 256 (0.79 -> 0.74), level at T = 16384.
STORE_P = {"train": os.environ.get("ASSOCMEM_TRITON_STORE_P_TRAIN", "auto"),
           "infer": os.environ.get("ASSOCMEM_TRITON_STORE_P_INFER", "auto")}  # fmt: skip


def _store_p(train: bool, K: int) -> bool:
    mode = STORE_P["train" if train else "infer"]
    if mode == "auto":
        return train or K > 128
    return mode == "1"


def _empty_p(q, store_p: bool):
    """P's buffer ([B, T, H, 64], stored like the chunk states: _store_dtype), or an empty tensor of its dtype
    where the forward stores no P (what the op returns then)."""
    return q.new_empty((*q.shape[:3], BT) if store_p else (0,), dtype=_store_dtype(q.dtype))


def _wy_fwd(q, k, beta, scale, chunks: _Chunks, half_a: bool = False, store_p: bool = False, out=None, c0=0, c1=None,
            wu=None):  # fmt: skip
    """A, and P where store_p (else None). (P by a kernel of its own was slower than formed here: NOTES.md,
    version 14.) `out`: (A, P) to write into; c0, c1: the chunks to form, c0 <= chunk < c1 (equal lengths);
    `wu`: (v, W, U), W = A beta K and U = A beta V written into the last two (PIPELINE_WU)."""
    B, T, H, K = k.shape
    if out is None:
        out = torch.empty(B, T, H, BT, dtype=_a_dtype(half_a), device=k.device), _empty_p(q, True) if store_p else None
    A, P = out
    v, w, u = wu or (None,) * 3
    c1 = chunks.grid_t if c1 is None else c1
    kernels.wy_fwd_kernel[(c1 - c0, B * H if not chunks.varlen else H)](
        q, k, v, beta, A, P, w, u, chunks.cu_seqlens, chunks.index, scale, T, c0, H=H, K=K,
        V=1 if v is None else v.shape[-1], BK=min(WY_FWD_BK, _width(K)), IS_VARLEN=chunks.varlen,
        PREC=_precision(k.dtype), STORE_P=store_p, A_PREC=_wy_a_precision(k.dtype), STORE_WU=wu is not None,
        HALF_WU=k.dtype == torch.bfloat16, **_launch("wy_fwd" if wu is None else "wy_fwd_wu", K, k.dtype),
    )  # fmt: skip
    return A, P


def _state_wu(q, k, w, u, P, scale, h0, chunks: _Chunks, out, BV: int, c0: int, c1: int, write_o: bool = False):
    """The pass from W and U (state_wu_kernel) over chunks c0 <= chunk < c1 from h0, into `out`: (o, ht, h,
    vnew), each but o allocated where None; o written where write_o (from the stored P). Returns them."""
    B, T, H, K = k.shape
    V = u.shape[-1]
    o, ht, h, vnew = out
    if h is None:
        h, vnew = _kept(k, u, chunks.cu_seqlens, True)
    if ht is None:
        ht = torch.empty(chunks.N, H, K, V, dtype=torch.float32, device=k.device)
    kernels.state_wu_kernel[(_cdiv(V, BV), chunks.N * H)](
        q, k, w, u, P, o, h, vnew, h0, ht, chunks.cu_seqlens, chunks.offsets, scale, T, c0, c1, H=H, K=K, V=V,
        BK=_width(K), BV=BV, USE_H0=h0 is not None, IS_VARLEN=chunks.varlen, PREC=_precision(k.dtype),
        HALF_OPERANDS=_half_operands("state_recompute", k.dtype, K, BV) & (1 | 4), WRITE_O=write_o,
        **_launch("state_wu_o" if write_o else "state_wu", K, k.dtype),
    )  # fmt: skip
    return o, ht, h, vnew


# The WY forward's key tile, and the precision of its four products that form A from the diagonal blocks'
# inverses for bf16 inputs (other dtypes: three tf32 passes). tf32 puts A within about 2e-4 of float64 against
# 1e-3 for its bf16 storage (random keys; 1.3e-3 against 2.0e-3 for nearly parallel ones:
# benchmarks/results/wy_inverse_accuracy_v17.json); three passes made the kernel 1.4-1.9x slower on the H200
# (NOTES.md, version 17).
WY_FWD_BK = 64
WY_FWD_A_PREC_BF16 = "tf32"


def _wy_a_precision(dtype: torch.dtype) -> str:
    return WY_FWD_A_PREC_BF16 if dtype == torch.bfloat16 else "tf32x3"


def _forward_tile(q, v, chunks: _Chunks, keeps: bool = True) -> int:
    """The state passes' value tile for the forward (`keeps`: one that keeps the states for the backward) and
    the backward's recomputing pass."""
    return _state_tile_v(q.shape[3], v.shape[3], "state_fwd", q.dtype, chunks.N * q.shape[2], q.device, keeps)


# Pipeline stages of the inference forward's state pass (the output only, nothing kept) per padded K, where its
# programs reach INFER_MANY_PROGRAMS per SM. Measured on the H200 (NOTES.md, version 16;
# benchmarks/results/ab_v16e.json): at K = 128, 2 stages instead of 3 took the forward from 0.606 to 0.547 ms at
# T = 2048 (512 programs for 132 SMs) and from 0.619 to 0.544 at T = 4096 (256), but from 0.617 to 0.731 at
# T = 8192 (128) and 0.915 to 1.110 at 16384 (64); at K = 64 it was slower at every T, and in the forward that
# keeps the states slower too (ab_v16d.json). Why, as scripts/smem_check.py gives it since it compiles with a
# launch's hints (version 19): with 3 stages the pass takes 163,840 bytes of shared memory, one block per SM;
# with 2 stages 114,688, two blocks (255 registers a thread either way). Two blocks pay where programs are
# many, the deeper prefetch where they are few. (Version 16's figures, 81,920 / 65,536, came from builds
# without those hints, in which no load was pipelined.)
# A launch setting of state_fwd for that K in LAUNCH_BY_K (a sweep's choice, load_tuned) comes before the rule.
INFER_STAGES: dict[int, int] = {128: 2}
INFER_MANY_PROGRAMS = 1.5


# The training forward's state pass (it keeps the states and writes the output) per padded K in bf16, where its
# programs reach TRAIN_MANY_PROGRAMS per SM: {"num_stages": n, "q_one_buffer": bool} (kernels.state_fwd_kernel's
# Q_ONE_BUFFER). At K = 128 the pass takes 188,416 bytes of shared memory with its 3 stages, one block per SM on
# the H200 (benchmarks/results/ncu_v18_d128.txt); with 2 stages still 131,072, as Q's tile takes a buffer per
# stage; with 2 stages and Q in one buffer 114,688 and 252 registers (scripts/smem_check.py --train-fwd), two
# blocks per SM. At K = 64 two blocks fit with 2 stages either way (90,112 / 81,920 bytes; 3 stages: one).
# Measured on the H200 (NOTES.md, version 20; benchmarks/results/ab_v20a.json, ab_v20b.json), forward+backward
# in ms with / without: D = 128, T = 2048 (512 programs for 132 SMs) 1.821 / 1.915, 4096 (256) 1.824 / 1.919,
# but 8192 (128) 2.004 / 1.939 and 16384 2.422 / 2.338; D = 64, T = 2048 (512) 1.680 / 1.789, 8192 (128)
# 1.966 / 1.913. As for the inference forward: two blocks pay where programs are many, the deeper prefetch
# where they are few. Untimed at K = 256 (no stage count below 3 fits two blocks there but 1, which was slower).
TRAIN_STATE_FWD: dict[int, dict] = {64: {"num_stages": 2, "q_one_buffer": True},
                                    128: {"num_stages": 2, "q_one_buffer": True}}  # fmt: skip
TRAIN_MANY_PROGRAMS = 1.5


def _state_fwd_launch(K: int, dtype, programs: int, device, inference: bool, training: bool = False) -> dict:
    options = _launch("state_fwd", K, dtype)
    per_sm = programs / _sm_count(device)
    rule = inference and _width(K) in INFER_STAGES and ("state_fwd", _width(K)) not in LAUNCH_BY_K
    if rule and per_sm >= INFER_MANY_PROGRAMS:
        options["num_stages"] = min(options["num_stages"], INFER_STAGES[_width(K)])
    many = per_sm >= TRAIN_MANY_PROGRAMS
    train = TRAIN_STATE_FWD.get(_width(K), {}) if training and dtype == torch.bfloat16 and many else {}
    if "num_stages" in train:
        options["num_stages"] = int(train["num_stages"])
    return {**options, "Q_ONE_BUFFER": bool(train.get("q_one_buffer", False))}


def _state_fwd(q, k, v, beta, A, scale, h0, chunks: _Chunks, *, write_o: bool, store_h: bool, final=None, BV=None,
               P=None, out=None, c0=0, c1=2**31 - 1):  # fmt: skip
    """The sequential pass: o where write_o (from the stored P where given), the final state where `final`
    (default: write_o), (chunk-start states, V') where store_h; value tiles of BV (default: _forward_tile's).
    `out`: (o, ht, h, vnew) to write into; c0, c1: the chunks walked, c0 <= chunk < c1, from h0."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    final = write_o if final is None else final
    BV = BV or _forward_tile(q, v, chunks)
    o, ht, h, vnew = out or (None,) * 4
    if store_h and h is None:
        h, vnew = _kept(q, v, chunks.cu_seqlens, True)
    if write_o and o is None:
        o = torch.empty_like(v)
    if final and ht is None:
        ht = torch.empty(chunks.N, H, K, V, dtype=torch.float32, device=q.device)
    # Storing the states (the backward's recomputing pass, or a keeping forward) takes state_recompute's bits,
    # so that kept states equal what the backward would recompute.
    half = _half_operands("state_recompute" if store_h else "state_fwd", q.dtype, K, BV)
    grid = (_cdiv(V, BV), chunks.N * H)
    kernels.state_fwd_kernel[grid](
        q, k, v, beta, A, P, o, h, vnew, h0, ht, chunks.cu_seqlens, chunks.offsets, scale, T, c0, c1,
        H=H, K=K, V=V, BK=_width(K), BV=BV, USE_H0=h0 is not None, STORE_FINAL=final,
        STORE_H=store_h, WRITE_O=write_o, IS_VARLEN=chunks.varlen,
        PREC=_precision(q.dtype), HALF_OPERANDS=half, LOAD_P=write_o and P is not None,
        **_state_fwd_launch(K, q.dtype, grid[0] * grid[1], q.device, write_o and not store_h, write_o and store_h),
    )  # fmt: skip
    return o, ht, h, vnew


# The forward as fla runs it (version 13): the state pass stores the chunk states and V' and carries only the
# three products on its chain (K S, A (beta (V - K S)), K^T V'); the output Q S + tril(Q K^T) V' follows in a
# kernel parallel over chunks (`output_kernel`). Measured on the H200 at T = 16384 (NOTES.md, version 13): as
# the output-only forward it was slower at every head size (D = 128: 1.15 against 0.91 ms), so that forward
# stays fused; a forward that keeps the states with a state tile narrower than 64 (K = 256 at few programs,
# where the fused pass's bf16 bits 2 and 4 are dropped: chunk._half_operands) gained: forward+backward at
# D = 256, T = 16384 3.89 against 4.20 ms, while D = 64 and 128 (64-wide tiles) were level. SPLIT_OUTPUT
# "auto" (default) takes the split there; "1" always; "0" never (ASSOCMEM_TRITON_SPLIT_OUTPUT at import).
SPLIT_OUTPUT = os.environ.get("ASSOCMEM_TRITON_SPLIT_OUTPUT", "auto")


def _split_output(keep_states: bool, state_tile: int) -> bool:
    if SPLIT_OUTPUT == "auto":
        return keep_states and state_tile < 64
    return SPLIT_OUTPUT == "1"


def _output(q, k, v, h, vnew, scale, chunks: _Chunks, P=None, o=None, c0=0, c1=None):
    """o from the kept states and V' (and P where given) for chunks c0 <= chunk < c1 (equal lengths), into `o`
    where given."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    BV = min(64, _width(V))
    o = torch.empty_like(v) if o is None else o
    c1 = chunks.grid_t if c1 is None else c1
    # state_fwd's bits 1 and 4 (the stored states and V' already carry the storage's rounding)
    half = _half_operands("state_fwd", q.dtype, K, BV) & (1 | 4)
    kernels.output_kernel[(_cdiv(V, BV), c1 - c0, B * H if not chunks.varlen else H)](
        q, k, P, h, vnew, o, chunks.cu_seqlens, chunks.index, scale, T, c0, H=H, K=K, V=V, BK=_width(K), BV=BV,
        IS_VARLEN=chunks.varlen, PREC=_precision(q.dtype), HALF_OPERANDS=half, LOAD_P=P is not None,
        **_launch("output", K, q.dtype),
    )  # fmt: skip
    return o


# The forward of long sequences as a pipeline (version 18; NOTES.md). Where the state pass has
# few programs (sequences x heads x value tiles at most PIPELINE_MAX_SHARE per SM: T = 16384 at the benchmark's
# shapes) it is a chain of dependent chunk steps that leaves much of each SM idle, while the WY
# forward before it is parallel over chunks. The chunks are cut into PIPELINE_SEGMENTS segments: the WY forward
# of segments 1.. runs on a second CUDA stream while the state pass walks segment 0, 1, ... on the caller's
# stream, each segment waiting only for its own A (and P) and starting from the state the previous one left.
# Equal-length batches only (packed sequences have no common chunk range). "auto": where the programs are few
# and the sequences at least PIPELINE_MIN_CHUNKS long; "1": always (also on the CPU, in order, for the tests);
# "0": never (ASSOCMEM_TRITON_PIPELINE at import). Measured on the H200 at T = 16384 (benchmarks/results/
# ab_v18c.json, forward, one launch / 2 / 4 segments): D = 64 0.841 / 0.771 / 0.741 ms, D = 128 0.758 / 0.741 /
# 0.890, D = 256 1.077 / 1.033 / 1.030; at T = 8192 (128 programs) level or slower (ab_v18a.json, ab_v18b.json).
# The backward's (ab_v18d.json, forward+backward at T = 16384): D = 128 2.476 -> 2.337 ms, D = 64 2.523 -> 2.307,
# D = 256 level.
PIPELINE = os.environ.get("ASSOCMEM_TRITON_PIPELINE", "auto")
PIPELINE_SEGMENTS = 2
PIPELINE_MAX_SHARE = 0.5
PIPELINE_MIN_CHUNKS = 256  # per sequence (16K tokens: where it was measured; 8K is untried for the backward)
# The backward likewise: the reverse pass walks the segments from the last, and each segment's dqkw and WY
# backward run on the second stream while it walks the one before (ASSOCMEM_TRITON_PIPELINE_BWD=0 at import
# turns it off; PIPELINE="0" turns both off). Its programs may reach one per SM (its state tile is 32 wide at
# K = 128: twice the forward's programs).
PIPELINE_BWD = os.environ.get("ASSOCMEM_TRITON_PIPELINE_BWD", "1") == "1"
PIPELINE_BWD_MAX_SHARE = 1.0
# Options of the pipelines (NOTES.md, versions 21 and 22; forward+backward at T = 16384, the only length that is
# pipelined in the benchmark). PIPELINE_WU (on, up to PIPELINE_WU_MAX_K): the state pass's chain two products long,
# as flash-linear-attention forms it: the WY forward of a forward that keeps the states also writes W = A beta K
# and U = A beta V (its launch "wy_fwd_wu" at 1 stage), and the pass forms V' = U - W S (state_wu_kernel), writing
# the output off its chain from the stored P. With REVERSE_FROM_W below, D = 128: 2.219 against 2.347 ms (1.52x
# fla against 1.44x), D = 64: 2.081 against 2.168 (benchmarks/results/ab_v22b.json; ab_v22a.json: 2.264 / 2.307
# against 2.373 at D = 128). Untimed at K = 256, so off there. PIPELINE_SPLIT_OUTPUT (off): each segment's output
# by `output_kernel` on the second stream while the pass walks the next (2.39 ms plain, ab_v21b.json; 2.53 with
# PIPELINE_WU, ab_v22a.json). PIPELINE_SPLIT_DV (off): the local part of dV' (P^T dO, `dv_local_kernel` from the
# stored P) per segment on the second stream ahead of the reverse pass, which then reads it (2.57 ms).
PIPELINE_SPLIT_OUTPUT = False
PIPELINE_WU = True
PIPELINE_WU_MAX_K = 128
PIPELINE_SPLIT_DV = False
# The reverse pass from W = A beta K (`w_kernel`, parallel over chunks, before the pass; per segment on the second
# stream where the backward is pipelined): W^T dV' in one product instead of K^T (beta A^T dV'), so the pass's
# chain is two products long, as flash-linear-attention's. True: always; "pipelined" (the default): only where
# the backward is pipelined, and for K from REVERSE_FROM_W_MIN_K to REVERSE_FROM_W_MAX_K. Measured (ab_v22a.json,
# forward+backward): unpipelined it costs 0.22 ms at D = 128, T = 2048 / 8192 (the extra kernel on the pass's
# stream, the pass no shorter where its programs fill the card); pipelined at T = 16384 it gains 0.015-0.04 ms at
# D = 128 and loses 0.07-0.1 at D = 64 (where the pass's products are half as long). At 256 the pass with W's tile
# takes 241,664 bytes of shared memory with its 2 stages in bf16 (over an H200 SM's 232,448;
# scripts/smem_check.py), and 1 stage gave wrong gradients there (version 19).
REVERSE_FROM_W = "pipelined"
REVERSE_FROM_W_MIN_K = 128
REVERSE_FROM_W_MAX_K = 128
# Where the pipelines cut the chunks (fractions of them, ascending; None: PIPELINE_SEGMENTS even segments). The
# segment that runs alone is the forward's first (its WY forward, before the pass can start) and the backward's
# first (its chunk-parallel kernels, after the pass has ended). Uneven cuts (0.33 / 0.4 / 0.6, three backward
# segments) were within the runs' noise of even ones or slower (ab_v22b.json), so None.
PIPELINE_FWD_CUTS = None
PIPELINE_BWD_CUTS = None
_SIDE_STREAMS: dict = {}


def _pipeline_segments(q, v, chunks: _Chunks, BV: int, max_share: float | None = None, cuts=None) -> int:
    share = PIPELINE_MAX_SHARE if max_share is None else max_share
    if PIPELINE == "0" or chunks.varlen or (PIPELINE == "auto" and q.device.type != "cuda"):
        return 1
    if PIPELINE == "auto" and (chunks.grid_t < PIPELINE_MIN_CHUNKS or chunks.N * q.shape[2] * _cdiv(v.shape[3], BV)
                               > share * _sm_count(q.device)):  # fmt: skip
        return 1
    return max(1, min(PIPELINE_SEGMENTS if cuts is None else len(cuts) + 1, chunks.grid_t // 2))


def _segment_bounds(chunks: _Chunks, segments: int, cuts=None) -> list[int]:
    if cuts is not None and len(cuts) == segments - 1:
        inner = [min(max(round(c * chunks.grid_t), 1), chunks.grid_t - 1) for c in cuts]
        return [0, *inner, chunks.grid_t]
    return [round(g * chunks.grid_t / segments) for g in range(segments + 1)]


def _side_stream(device) -> torch.cuda.Stream:
    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]


def _pipelined_fwd(q, k, v, beta, scale, h0, chunks: _Chunks, keep: bool, half_a: bool, store_p: bool, BV: int,
                   segments: int, split: bool = False, wu: bool = False):  # fmt: skip
    """chunk_fwd's (o, ht, h, vnew, A, P) with the chunks in `segments` segments (PIPELINE). Off CUDA the
    segments run in order on the one stream (torch.cuda.stream(None) does nothing). `split` (with `keep`):
    the output of each segment but the last by output_kernel on the second stream (PIPELINE_SPLIT_OUTPUT);
    `wu` (with `keep`): the pass from W and U (PIPELINE_WU), with the output in it unless `split`."""
    bounds = _segment_bounds(chunks, segments, PIPELINE_FWD_CUTS)
    main = torch.cuda.current_stream(q.device) if q.device.type == "cuda" else None
    side = _side_stream(q.device) if main is not None else None
    wu_out = (v, torch.empty_like(k), torch.empty_like(v)) if wu else None  # (v, W, U)
    split = split or (wu_out is not None and not store_p)  # (the pass from W and U writes o from the stored P)
    wy = _wy_fwd(q, k, beta, scale, chunks, half_a, store_p, c0=bounds[0], c1=bounds[1], wu=wu_out)
    if side is not None:
        side.wait_stream(main)  # the inputs, the buffers and segment 0's WY forward, as timed (version 18)
    ready = []
    for g in range(1, segments):
        with torch.cuda.stream(side):
            _wy_fwd(q, k, beta, scale, chunks, half_a, store_p, out=wy, c0=bounds[g], c1=bounds[g + 1], wu=wu_out)
            if side is not None:
                ready.append(side.record_event())
    out = (torch.empty_like(v), None, None, None) if split or wu_out is not None else None
    for g in range(segments):
        if ready and g > 0:
            main.wait_event(ready[g - 1])
        c0, c1 = bounds[g], bounds[g + 1]
        if wu_out is not None:
            out = _state_wu(q, k, *wu_out[1:], wy[1], scale, h0 if g == 0 else out[1], chunks, out, BV, c0, c1,
                            write_o=not split)  # fmt: skip
        else:
            out = _state_fwd(q, k, v, beta, wy[0], scale, h0 if g == 0 else out[1], chunks, write_o=not split,
                             store_h=keep, final=True, BV=BV, P=wy[1], out=out, c0=c0, c1=c1)  # fmt: skip
        if split:
            last = g == segments - 1
            if side is not None and not last:
                side.wait_stream(main)  # this segment's states and V'
            with torch.cuda.stream(None if last else side):
                _output(q, k, v, out[2], out[3], scale, chunks, wy[1], o=out[0], c0=c0, c1=c1)
    if split and side is not None:
        main.wait_stream(side)
    return (*out, *wy)


def _kept(q, v, cu_seqlens, keep: bool):
    """The shapes of what a forward keeps for the backward besides A: empty where it keeps nothing."""
    B, T, H, K = q.shape
    if not keep:
        return q.new_empty(0, dtype=_store_dtype(q.dtype)), v.new_empty(0, dtype=_vprime_dtype(q.dtype))
    h = q.new_empty(_max_chunks(B, T, cu_seqlens), H, K, v.shape[-1], dtype=_store_dtype(q.dtype))
    return h, v.new_empty(v.shape, dtype=_vprime_dtype(q.dtype))


def _empty_fwd(q, k, v, h0, cu_seqlens, keep, half_a, store_p):
    B, T, H, K = q.shape
    N = _num_sequences(B, cu_seqlens)
    ht = torch.zeros(N, H, K, v.shape[-1], device=q.device) if h0 is None else h0.clone()
    A = torch.empty(B, T, H, BT, dtype=_a_dtype(half_a), device=q.device)
    return (torch.empty_like(v), ht, A, _empty_p(q, store_p), *_kept(q, v, cu_seqlens, keep))


@on_input_device
def chunk_fwd(q, k, v, beta, scale: float, h0, cu_seqlens, keep_states: bool = False, half_a: bool = False,
              store_p: bool = False):  # fmt: skip
    """o [B, T, H, V] in v's dtype, the final state [N, H, K, V] float32, and for the backward A (float32,
    bf16 with half_a), P with store_p (else an empty tensor) and, with keep_states, the chunk-start states and
    V' (else two empty tensors)."""
    if q.shape[1] == 0:
        return _empty_fwd(q, k, v, h0, cu_seqlens, keep_states, half_a, store_p)
    chunks = _Chunks(q.shape[0], q.shape[1], cu_seqlens)
    BV = _forward_tile(q, v, chunks, keep_states)
    split = _split_output(keep_states, BV)
    segments = 1 if split else _pipeline_segments(q, v, chunks, BV, cuts=PIPELINE_FWD_CUTS)
    if segments > 1:
        wu = keep_states and PIPELINE_WU and _width(q.shape[3]) <= PIPELINE_WU_MAX_K
        o, ht, h, vnew, A, P = _pipelined_fwd(q, k, v, beta, scale, h0, chunks, keep_states, half_a, store_p, BV,
                                              segments, keep_states and PIPELINE_SPLIT_OUTPUT, wu)  # fmt: skip
    else:
        A, P = _wy_fwd(q, k, beta, scale, chunks, half_a, store_p)
        if split:
            _, ht, h, vnew = _state_fwd(q, k, v, beta, A, scale, h0, chunks, write_o=False, store_h=True, final=True,
                                        BV=BV)  # fmt: skip
            o = _output(q, k, v, h, vnew, scale, chunks, P)
        else:
            o, ht, h, vnew = _state_fwd(q, k, v, beta, A, scale, h0, chunks, write_o=True, store_h=keep_states, BV=BV,
                                        P=P)  # fmt: skip
    kept = (h, vnew) if keep_states else _kept(q, v, cu_seqlens, False)
    return (o, ht, A, P if store_p else _empty_p(q, False), *kept)


@on_input_device
def chunk_bwd(q, k, v, beta, scale: float, h0, cu_seqlens, do, dht, A, h=None, vnew=None, P=None):
    """(dq, dk, dv, dbeta, dh0): the first four in their inputs' dtypes, dh0 float32 [N, H, K, V]. h and
    vnew: the chunk-start states and V' a forward kept (keep_states), else recomputed here; P: what a forward
    with store_p stored (else None or empty: the local part of dV' is then a kernel of its own)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    if T == 0:  # no tokens: the final state is the initial one
        N = _num_sequences(B, cu_seqlens)
        dh0 = torch.zeros(N, H, K, V, device=q.device) if dht is None else dht.clone()
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(beta), dh0
    chunks = _Chunks(B, T, cu_seqlens)
    prec = _precision(q.dtype)
    if h is None or h.numel() == 0:  # (the kernels below only read h and vnew)
        _, _, h, vnew = _state_fwd(q, k, v, beta, A, scale, h0, chunks, write_o=False, store_h=True)

    heads = B * H if not chunks.varlen else H
    dh = torch.empty_like(h)
    dvnew = torch.empty_like(v, dtype=_vprime_dtype(q.dtype))
    load_p = P is not None and P.numel() > 0

    def local(c0, c1):  # the local part of dV' on chunks c0 <= chunk < c1, from P where stored
        tile = min(64, _width(V))
        kernels.dv_local_kernel[(_cdiv(V, tile), c1 - c0, heads)](
            q, k, P if load_p else None, do, dvnew, chunks.cu_seqlens, chunks.index, scale, T, c0,
            H=H, K=K, V=V, BK=_width(K), BV=tile, IS_VARLEN=chunks.varlen, PREC=prec, LOAD_P=load_p,
            **_launch("dv_local", K, q.dtype),
        )  # fmt: skip

    def form_w(c0, c1):  # W = A beta K on chunks c0 <= chunk < c1
        BK = min(64, _width(K))
        kernels.w_kernel[(_cdiv(K, BK), c1 - c0, heads)](
            k, beta, A, W, chunks.cu_seqlens, chunks.index, T, c0, H=H, K=K, BK=BK, IS_VARLEN=chunks.varlen,
            PREC=prec, HALF=q.dtype == torch.bfloat16, **_launch("w", K, q.dtype),
        )  # fmt: skip

    BV = _state_tile_v(K, V, "state_bwd")
    segments = (_pipeline_segments(q, v, chunks, BV, PIPELINE_BWD_MAX_SHARE, PIPELINE_BWD_CUTS)
                if load_p and PIPELINE_BWD else 1)  # fmt: skip
    from_w = REVERSE_FROM_W is True or (REVERSE_FROM_W == "pipelined" and segments > 1)
    W = torch.empty_like(k) if from_w and REVERSE_FROM_W_MIN_K <= _width(K) <= REVERSE_FROM_W_MAX_K else None
    split_dv = segments > 1 and PIPELINE_SPLIT_DV
    if not load_p:
        local(0, chunks.grid_t)
    if W is not None and segments == 1:
        form_w(0, chunks.grid_t)
    # formed per segment ahead of its pass (the last segment's first, the others' on the second stream)
    ahead = [f for f, on in ((local, split_dv), (form_w, W is not None and segments > 1)) if on]
    dh0 = torch.empty(chunks.N, H, K, V, dtype=torch.float32, device=q.device)
    state_bwd = functools.partial(_state_bwd, q, k, beta, A, P if load_p and not split_dv else None, W, do, dh,
                                  dvnew, dh0, scale, chunks, BV)  # fmt: skip

    fused = _fused_wy_bwd(K, q.dtype)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty(B, T, H, dtype=torch.float32, device=q.device)
    if not fused:
        dk_part = torch.empty(B, T, H, K, dtype=_dw_dtype(q.dtype), device=q.device)
        dw = torch.empty(B, T, H, K, dtype=_dw_dtype(q.dtype), device=q.device)

    def parallel(c0, c1):  # dqkw and the WY backward on chunks c0 <= chunk < c1
        if fused:
            kernels.dqkw_wy_kernel[(c1 - c0, heads)](
                q, k, v, beta, A, vnew, do, dvnew, h, dh, dq, dk, dv, dbeta, chunks.cu_seqlens, chunks.index, scale,
                T, c0, H=H, K=K, V=V, BK=_width(K), BV=_fused_tile_v(K, V), IS_VARLEN=chunks.varlen, PREC=prec,
                HALF_OPERANDS=_half_operands("dqkw", q.dtype, K), HALF_WY=_half_operands("wy_bwd", q.dtype),
                **_launch("dqkw_wy", K, q.dtype),
            )  # fmt: skip
            return
        BK = _dqkw_tile_k(K)
        kernels.dqkw_kernel[(_cdiv(K, BK), c1 - c0, heads)](
            q, k, vnew, do, dvnew, h, dh, dq, dk_part, dw, chunks.cu_seqlens, chunks.index, scale, T, c0,
            H=H, K=K, V=V, BK=BK, BV=_dqkw_tile_v(K, V), IS_VARLEN=chunks.varlen, PREC=prec,
            HALF_OPERANDS=_half_operands("dqkw", q.dtype, K), **_launch("dqkw", K, q.dtype),
        )  # fmt: skip
        kernels.wy_bwd_kernel[(c1 - c0, heads)](
            k, v, beta, A, dw, dvnew, dk_part, dk, dv, dbeta, chunks.cu_seqlens, chunks.index, T, c0,
            H=H, K=K, V=V, BK=_wy_bwd_tiles(K, V)[0], BV=_wy_bwd_tiles(K, V)[1],
            IS_VARLEN=chunks.varlen, PREC=prec, HALF_OPERANDS=_half_operands("wy_bwd", q.dtype),
            **_launch("wy_bwd", K, q.dtype),
        )  # fmt: skip

    bounds = _segment_bounds(chunks, segments, PIPELINE_BWD_CUTS)
    main = torch.cuda.current_stream(q.device) if q.device.type == "cuda" and segments > 1 else None
    side = _side_stream(q.device) if main is not None else None  # (None: one stream, in order)
    ready = {}
    if ahead:
        for form in ahead:
            form(bounds[-2], bounds[-1])
        if side is not None:
            side.wait_stream(main)
        for g in reversed(range(segments - 1)):
            with torch.cuda.stream(side):
                for form in ahead:
                    form(bounds[g], bounds[g + 1])
                if side is not None:
                    ready[g] = side.record_event()
    for g in reversed(range(segments)):  # the reverse pass walks the last segment first
        if g in ready:
            main.wait_event(ready[g])
        state_bwd(dht if g == segments - 1 else dh0, bounds[g], bounds[g + 1])
        if side is not None:  # that segment's chunk-parallel kernels beside the reverse pass's next segment
            side.wait_stream(main)
        with torch.cuda.stream(side):
            parallel(bounds[g], bounds[g + 1])
    if side is not None:
        main.wait_stream(side)
    return dq, dk, dv, dbeta.to(beta.dtype), dh0


def _state_bwd(q, k, beta, A, P, W, do, dh, dvnew, dh0, scale, chunks: _Chunks, BV: int, dht, c0=0, c1=2**31 - 1):
    """The reverse pass over chunks c0 <= chunk < c1 (last first), from dht (None: zero); dS before chunk c0 to
    dh0, the chunk-end gradients to dh, dV' to dvnew (its local part from P where given, else already there);
    W^T dV' from W where given (REVERSE_FROM_W), else from A."""
    B, T, H, K = q.shape
    V = do.shape[-1]
    kernels.state_bwd_kernel[(_cdiv(V, BV), chunks.N * H)](
        q, k, beta, A, P, W, do, dh, dvnew, dht, dh0, chunks.cu_seqlens, chunks.offsets, scale, T, c0, c1,
        H=H, K=K, V=V, BK=_width(K), BV=BV, USE_DHT=dht is not None, STORE_DH0=True,
        IS_VARLEN=chunks.varlen, PREC=_precision(q.dtype), HALF_OPERANDS=_half_operands("state_bwd", q.dtype),
        LOAD_P=P is not None, LOAD_W=W is not None, **_launch("state_bwd", K, q.dtype),
    )  # fmt: skip


def _prepare(q, k, v, beta, initial_state):
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    h0 = None if initial_state is None else initial_state.to(torch.float32).contiguous()
    return q, k, v, beta, h0


@torch.library.custom_op("assocmem::triton_chunk_delta_rule_fwd", mutates_args=())
def _fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    keep_states: bool,
    half_a: bool,
    store_p: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, beta, h0 = _prepare(q, k, v, beta, initial_state)
    return chunk_fwd(q, k, v, beta, scale, h0, cu_seqlens, keep_states, half_a, store_p)


# (The decisions to keep, to store P and A's dtype are arguments of the op, not made inside it and its fake: fake
# tensors cache an op's result by its arguments, so a fake that read module state could disagree with the kernels.)
@_fwd_op.register_fake
def _(q, k, v, beta, scale, initial_state, cu_seqlens, keep_states, half_a, store_p):
    N = _num_sequences(q.shape[0], cu_seqlens)
    state = q.new_empty((N, q.shape[2], q.shape[3], v.shape[3]), dtype=torch.float32)
    A = q.new_empty((*q.shape[:3], BT), dtype=_a_dtype(half_a))
    # contiguous, as the kernels write them (whatever the inputs' strides)
    return (v.new_empty(v.shape), state, A, _empty_p(q, store_p), *_kept(q, v, cu_seqlens, keep_states))


@torch.library.custom_op("assocmem::triton_chunk_delta_rule_bwd", mutates_args=())
def _bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    do: torch.Tensor,
    dfinal: torch.Tensor | None,
    A: torch.Tensor,
    P: torch.Tensor,
    h: torch.Tensor,
    vnew: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, beta, h0 = _prepare(q, k, v, beta, initial_state)
    do = do.to(v.dtype).contiguous()
    dht = None if dfinal is None else dfinal.to(torch.float32).contiguous()
    return chunk_bwd(q, k, v, beta, scale, h0, cu_seqlens, do, dht, A, h, vnew, P)


@_bwd_op.register_fake
def _(q, k, v, beta, scale, initial_state, cu_seqlens, do, dfinal, A, P, h, vnew):
    N = _num_sequences(q.shape[0], cu_seqlens)
    state = q.new_empty((N, q.shape[2], q.shape[3], v.shape[3]), dtype=torch.float32)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), beta.new_empty(beta.shape), state


class TritonChunkFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, scale, initial_state, cu_seqlens):
        heads = _num_sequences(q.shape[0], cu_seqlens) * q.shape[2]
        train = any(ctx.needs_input_grad[:4])
        keep = train and _keep_states(heads, v.shape[-1], q.device)
        o, final, A, P, h, vnew = _fwd_op(
            q, k, v, beta, scale, initial_state, cu_seqlens, keep, _half_a(q.dtype), _store_p(train, q.shape[3])
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, beta, initial_state, cu_seqlens, A, P, h, vnew)
        ctx.scale = scale
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):
        q, k, v, beta, initial_state, cu_seqlens, A, P, h, vnew = ctx.saved_tensors
        dq, dk, dv, dbeta, dh0 = _bwd_op(
            q, k, v, beta, ctx.scale, initial_state, cu_seqlens, do, dfinal, A, P, h, vnew
        )  # fmt: skip
        dh0 = None if initial_state is None else dh0.to(initial_state.dtype)
        return dq, dk, dv, dbeta, None, dh0, None


def triton_chunk_delta_rule(q, k, v, beta, scale, initial_state, cu_seqlens):
    """The Triton chunk backend on validated inputs; see `assocmem.delta_rule` for the contract."""
    if torch.compiler.is_compiling() and k is q:
        # One tensor as both q and k: torch 2.11's compiled graph gave a gradient unlike eager mode's there on
        # the GPU (benchmarks/results/l2norm_compile_h200.log, "public+triton"); a copy makes them two inputs.
        k = k.clone()
    return TritonChunkFunction.apply(q, k, v, beta, scale, initial_state, cu_seqlens)


# A sweep's choices (ASSOCMEM_TRITON_TUNED=path) at import, after every module default they may override.
if os.environ.get("ASSOCMEM_TRITON_TUNED"):
    load_tuned(os.environ["ASSOCMEM_TRITON_TUNED"])
