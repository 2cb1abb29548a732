"""Compile the chunk kernels for an sm_90 target without a GPU and print their shared memory (limit 232448
bytes per block), registers per thread and stack bytes per thread (registers spilled to local memory:
Triton caps a thread at 255 registers), read from the cubin with the cuobjdump that Triton's package
carries, so that launch settings and tiles can be checked before a run on the H200. The local Triton may
be newer than the GPU machine's. With the pointers' alignment and T's divisibility given as a launch gives
them (version 19), Triton 3.6 here printed the shared memory that scripts/kernel_info.py read on the H200 for
every bf16 kernel at K = 128 of benchmarks/results/kinfo_v19.txt, and registers within 6 of it (the training
forward's state pass: 188 KB with 3 stages, one block per SM); before, with no such hints, no load was
pipelined and every figure was off.
With --wy-fwd: the WY forward at K = 128 (bf16 keys, A stored in float32 or bf16) over key tiles, warps and
stages, to see what its registers allow.
With --train-fwd: the training forward's state pass at K = 128 over stages, Q staged or in one buffer, at its
value tile (64) and at 32.
With --short-conv: ops.short_conv's two kernels (W = 4) in bf16 and float32, with and without a history,
positions and the SiLU: that each builds for sm_90, and its resources.
Usage: python scripts/smem_check.py [K ... | --wy-fwd | --train-fwd | --short-conv]"""

import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from assocmem.ops.delta_rule.triton import chunk, kernels

LIMIT = 232448
SM_SHARED, BLOCK_RESERVED = 233472, 1024  # an H200 SM's shared memory, and what each resident block costs on top


def compile_(fn, types: dict, consts: dict, num_warps: int, num_stages: int):
    # constexpr parameters not given take the kernel's defaults, as at a launch (else they would be typed as pointers)
    consts = {**{p.name: p.default for p in fn.params if p.is_constexpr and p.has_default}, **consts}
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            signature[name] = "constexpr"
            constexprs[(i,)] = consts[name]
        else:
            signature[name] = types.get(name, "*fp32")
            # What a launch's specialisation tells the compiler of PyTorch's allocations and of T = 2048: 16-byte
            # aligned pointers, T a multiple of 16. Without it no load can be an asynchronous copy, the pipeliner
            # keeps one stage, and the shared memory and registers printed were not the GPU's (version 19: the
            # forward state pass at K = 128 took 57 KB here against the H200's 188 KB).
            if signature[name].startswith("*") or name == "T":
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, constexprs, attrs)
    opts = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def registers(compiled) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of a compiled kernel."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    regs, stack = re.search(r"REG:(\d+)", out), re.search(r"STACK:(\d+)", out)
    return int(regs.group(1)) if regs else -1, int(stack.group(1)) if stack else -1


def launches(K, V, dtype="bf16", varlen=False):
    io = f"*{dtype}"
    BVs = min(64, chunk._width(V))
    common = {"K": K, "V": V, "H": 16, "IS_VARLEN": varlen, "PREC": "tf32" if dtype != "fp32" else "tf32x3"}
    ints = {"cu_seqlens": "*i32", "index": "*i32", "chunk_offsets": "*i32", "T": "i32", "scale": "fp32", "C0": "i32",
            "C1": "i32"}  # fmt: skip
    store = "*bf16" if dtype == "bf16" else "*fp32"  # chunk states kept for the backward
    tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    name = {torch.bfloat16: "*bf16", torch.float32: "*fp32"}
    # the buffers between the kernels in the dtypes a call stores them in (A, V' and dV', dW and dK's part)
    ints = {**ints, "A": name[chunk._a_dtype(chunk._half_a(tdtype))], "vnew": name[chunk._vprime_dtype(tdtype)],
            "dvnew": name[chunk._vprime_dtype(tdtype)], "du": name[chunk._vprime_dtype(tdtype)],
            "dw": name[chunk._dw_dtype(tdtype)], "dk_part": name[chunk._dw_dtype(tdtype)]}
    store_p = chunk._store_p(True, K)  # P as a training forward stores it (bf16 for bf16 inputs, like the states)
    for label, wu in (("", False), ("(wu)", True)):  # the second also writes W and U (chunk.PIPELINE_WU)
        yield "wy_fwd" + label, kernels.wy_fwd_kernel, {
            **ints, "q": io, "k": io, "v": io, "beta": io, "p": store, "w": io, "u": io}, {
            **common, "BK": min(chunk.WY_FWD_BK, chunk._width(K)), "STORE_P": store_p, "STORE_WU": wu,
            "HALF_WU": dtype == "bf16", "A_PREC": chunk._wy_a_precision(tdtype)}
    for label, write_o in (("", False), ("(o)", True)):  # the pass from W and U, the output in it or not
        yield "state_wu" + label, kernels.state_wu_kernel, {
            **ints, "q": io, "k": io, "w": io, "u": io, "p": store, "o": io, "h": store}, {
            **common, "BK": chunk._width(K), "BV": chunk._state_tile_v(K, V, "state_fwd"), "USE_H0": True,
            "HALF_OPERANDS": chunk._half_operands("state_recompute", tdtype, K) & 5, "WRITE_O": write_o}
    BV = chunk._state_tile_v(K, V, "state_fwd")
    fwd_half = chunk._half_operands("state_fwd", torch.bfloat16 if dtype == "bf16" else torch.float32)
    keep_half = chunk._half_operands("state_recompute", tdtype, K, BV)
    # the inference forward, the backward's recomputing pass, and a training forward that keeps the states
    for label, flags in (("", {"STORE_H": False, "WRITE_O": True, "STORE_FINAL": True, "HALF_OPERANDS": fwd_half,
                               "LOAD_P": chunk._store_p(False, K)}),
                         ("(bwd)", {"STORE_H": True, "WRITE_O": False, "STORE_FINAL": False, "HALF_OPERANDS": 0}),
                         ("(train)", {"STORE_H": True, "WRITE_O": True, "STORE_FINAL": True, "HALF_OPERANDS": keep_half,
                                      "LOAD_P": chunk._store_p(True, K)})):  # fmt: skip
        yield "state_fwd" + label, kernels.state_fwd_kernel, {
            **ints, "q": io, "k": io, "v": io, "beta": io, "o": io, "h": store, "p": store}, {
            **common, **flags, "BK": chunk._width(K), "BV": BV, "USE_H0": True}
    half = {name: chunk._half_operands(name, torch.bfloat16 if dtype == "bf16" else torch.float32, K)
            for name in chunk.HALF_OPERANDS}  # fmt: skip
    yield "dv_local", kernels.dv_local_kernel, {**ints, "q": io, "k": io, "do": io, "p": store}, {
        **common, "BK": chunk._width(K), "BV": BVs, "LOAD_P": store_p}
    bwd_types = {**ints, "q": io, "k": io, "beta": io, "do": io, "dh": store, "p": store}
    for label, load_w in (("", False), ("(w)", True)):  # the second from W (chunk.REVERSE_FROM_W)
        yield "state_bwd" + label, kernels.state_bwd_kernel, {**bwd_types, "w": io}, {
            **common, "BK": chunk._width(K), "BV": chunk._state_tile_v(K, V, "state_bwd"), "USE_DHT": True,
            "STORE_DH0": True, "HALF_OPERANDS": half["state_bwd"], "LOAD_P": store_p, "LOAD_W": load_w}
    yield "w", kernels.w_kernel, {**ints, "k": io, "beta": io, "w": io}, {
        **common, "BK": min(64, chunk._width(K)), "HALF": dtype == "bf16"}
    yield "dqkw", kernels.dqkw_kernel, {**ints, "q": io, "k": io, "do": io, "dq": io, "h": store, "dh": store}, {
        **common, "BK": chunk._dqkw_tile_k(K), "BV": chunk._dqkw_tile_v(K, V), "HALF_OPERANDS": half["dqkw"]}
    BK, BV = chunk._wy_bwd_tiles(K, V)
    yield "wy_bwd", kernels.wy_bwd_kernel, {**ints, "k": io, "v": io, "beta": io, "dk": io, "dv": io}, {
        **common, "BK": BK, "BV": BV, "HALF_OPERANDS": half["wy_bwd"]}
    if chunk._width(K) <= (chunk.FUSED_MAX_K_FP32 if dtype == "fp32" else chunk.FUSED_MAX_K):  # the two above as one
        yield "dqkw_wy", kernels.dqkw_wy_kernel, {
            **ints, "q": io, "k": io, "v": io, "beta": io, "do": io, "dq": io, "dk": io, "dv": io, "h": store,
            "dh": store}, {
            **common, "BK": chunk._width(K), "BV": chunk._fused_tile_v(K, V), "HALF_OPERANDS": half["dqkw"],
            "HALF_WY": half["wy_bwd"]}


def main(Ks=(64, 128), dtypes=("bf16", "fp32")):
    bad = 0
    for K in Ks:
        for dtype in dtypes:
            for name, fn, types, consts in launches(K, K, dtype):
                base = {"wy_fwd(wu)": "wy_fwd_wu", "state_wu(o)": "state_wu_o"}.get(name, name.split("(")[0])
                cfg = chunk._launch(base, K, torch.float32 if dtype == "fp32" else torch.bfloat16)
                try:
                    c = compile_(fn, types, {k: v for k, v in consts.items() if k in fn.arg_names}, **cfg)
                    smem = c.metadata.shared
                    ok = smem <= LIMIT
                    bad += not ok
                    regs, stack = registers(c)
                    tiles = {k: v for k, v in consts.items() if k in ("BK", "BV")}
                    print(f"K={K:4d} {dtype:5s} {name:15s} {cfg} {tiles} shared {smem:7d} {'ok' if ok else 'TOO MUCH'}"
                          f"  registers {regs:3d}  stack {stack:5d}")
                except Exception as e:  # noqa: BLE001
                    bad += 1
                    print(f"K={K:4d} {dtype:5s} {name:16s} {cfg} failed: {type(e).__name__}: {str(e)[:300]}")
    return bad


def wy_fwd_table():
    ints = {"cu_seqlens": "*i32", "chunk_index": "*i32", "T": "i32", "C0": "i32"}
    for a_type in ("*fp32", "*bf16"):
        for BK in (64, 128):
            for warps, stages in ((4, 1), (4, 2), (8, 1), (8, 2)):
                consts = {"K": 128, "H": 16, "IS_VARLEN": False, "PREC": "tf32", "BK": BK, "STORE_P": True}
                types = {**ints, "q": "*bf16", "k": "*bf16", "beta": "*bf16", "A": a_type, "p": "*bf16",
                         "scale": "fp32"}  # fmt: skip
                regs, stack = registers(compile_(kernels.wy_fwd_kernel, types, consts, warps, stages))
                print(f"A {a_type[1:]:4s} BK {BK:3d} warps {warps} stages {stages}  registers {regs:3d}"
                      f"  stack {stack:4d}", flush=True)

def train_fwd_table(K: int = 128):
    """The training forward's state pass (bf16) over stages, with Q staged or in one buffer (chunk.TRAIN_STATE_FWD):
    shared memory, registers and the blocks of 4 warps that fit on an H200 SM (228 KB, 1 KB reserved per block;
    65,536 registers)."""
    for name, fn, types, consts in launches(K, K, "bf16"):
        if name != "state_fwd(train)":
            continue
        consts = {k: v for k, v in consts.items() if k in fn.arg_names}
        for BV in (consts["BV"], 32) if consts["BV"] > 32 else (consts["BV"],):
            for one_buffer in (False, True):
                for stages in (1, 2, 3):
                    c = compile_(fn, types, {**consts, "BV": BV, "Q_ONE_BUFFER": one_buffer}, 4, stages)
                    regs, stack = registers(c)
                    blocks = min(SM_SHARED // (c.metadata.shared + BLOCK_RESERVED), 65536 // (max(regs, 1) * 128))
                    print(f"K={K} state_fwd(train) BV {BV} Q one buffer {one_buffer!s:5s} stages {stages}  shared "
                          f"{c.metadata.shared:7d}  registers {regs:3d}  stack {stack:4d}  blocks per SM {blocks}",
                          flush=True)


def short_conv_table():
    from assocmem.ops.short_conv import triton as conv

    ints = {"T": "i32", "C": "i32"}
    for dtype in ("bf16", "fp32"):
        for name, fn in (("forward", conv.short_conv_fwd_kernel), ("backward", conv.short_conv_bwd_kernel)):
            for has_h, has_pos, silu in ((False, False, True), (True, False, True), (False, True, True),
                                         (False, False, False)):  # fmt: skip
                types = {**ints, "x": f"*{dtype}", "w": "*fp32", "h": f"*{dtype}", "pos": "*i32", "y": f"*{dtype}",
                         "dy": f"*{dtype}", "dx": f"*{dtype}", "dw": "*fp32"}  # fmt: skip
                consts = {"W": 4, "BT": conv.BLOCK_T, "BC": conv.BLOCK_C, "HAS_H": has_h, "HAS_POS": has_pos,
                          "SILU": silu}  # fmt: skip
                c = compile_(fn, types, consts, conv.WARPS, 1)
                regs, stack = registers(c)
                print(f"short_conv {name:8s} {dtype} history {has_h!s:5s} positions {has_pos!s:5s} silu {silu!s:5s}"
                      f"  shared {c.metadata.shared:6d}  registers {regs:3d}  stack {stack:4d}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--short-conv"]:
        sys.exit(short_conv_table())
    if sys.argv[1:] == ["--wy-fwd"]:
        sys.exit(wy_fwd_table())
    if sys.argv[1:] == ["--train-fwd"]:
        sys.exit(train_fwd_table())
    Ks = tuple(int(a) for a in sys.argv[1:]) or (64, 128)
    sys.exit(1 if main(Ks) else 0)
