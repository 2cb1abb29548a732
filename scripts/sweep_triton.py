"""Launch settings of the Triton chunk kernels on this GPU: one kernel at a time, the rest fixed.

For each head size D (T = 4096, B = 8, H = 2048 / D, bf16), times forward and forward+backward with the
defaults and with fla's chunk_delta_rule beside them, then tries (num_warps, num_stages) per kernel and
keeps the fastest (coordinate descent) by the summed time of that shape and a long one
(T = 16384, B = 2); also times forward+backward with chunk.HALF_OPERANDS switched off.
Usage: python scripts/sweep_triton.py [OUT.json [D ...]] (head sizes in the order given; default 64 128 256).
Prints the table and writes JSON to the path given (after each head size) or to stdout.
"""

import json
import sys

import torch

from assocmem import delta_rule
from assocmem.bench.delta_rule_gpu import _events_ms, _fla, _inputs, _runner
from assocmem.ops.delta_rule.triton import chunk as tchunk

OPTIONS = [(2, 2), (4, 1), (4, 2), (4, 3), (8, 1), (8, 2), (8, 3)]
FWD_KERNELS = ("wy_fwd", "state_fwd")


def main(out=None, heads=(64, 128, 256)):
    torch.manual_seed(0)
    fla_chunk, _, _ = _fla()
    report = {}
    for D in heads:
        H, T, B = 2048 // D, 4096, 8
        inputs = _inputs(B, T, H, D, "cuda")
        do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
        ours = {bw: _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], inputs, do, bw)
                for bw in (False, True)}  # fmt: skip
        # A second, long shape (same tokens per batch): a setting is scored by the sum of both times, so that
        # one chosen at T = 4096 cannot cost the long sequences (version 6's single-stage forward did).
        long_inputs = _inputs(2, 16384, H, D, "cuda")
        long_do = torch.randn(2, 16384, H, D, device="cuda", dtype=torch.bfloat16)
        long = {bw: _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], long_inputs, long_do, bw)
                for bw in (False, True)}  # fmt: skip
        entry = {"default": {p: _events_ms(ours[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}}
        if fla_chunk is not None:
            fla = {bw: _runner(lambda q, k, v, b: fla_chunk(q, k, v, b)[0], inputs, do, bw) for bw in (False, True)}
            entry["fla"] = {p: _events_ms(fla[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}
        # What the bf16 rounding of backward intermediates buys (chunk.HALF_OPERANDS; NOTES.md, version 6).
        saved = dict(tchunk.HALF_OPERANDS)
        tchunk.HALF_OPERANDS.update({name: 0 for name in saved})
        entry["half_operands_off"] = {"fwd+bwd": _events_ms(ours[True], reps=10)}
        tchunk.HALF_OPERANDS.update(saved)
        print(D, entry, flush=True)
        chosen = {}
        for name in tchunk.LAUNCH:
            bw = name not in FWD_KERNELS
            call = lambda bw=bw, ours=ours, long=long: (ours[bw](), long[bw]())  # noqa: E731 - both shapes, one timing
            # dqkw also tries one key tile per head (it re-reads V', dV' and dO once per tile); the state
            # kernels a value tile of 32 (twice the programs, half the state per program)
            if name == "dqkw":
                knob, table, key0 = "BK", tchunk.DQKW_TILE_K, D
                tiles = [table[D]] + ([D] if D > table[D] else [])
            elif name in ("state_fwd", "state_bwd"):
                knob, table, key0 = "BV", tchunk.STATE_TILE_V, (name, D)
                default = tchunk._state_tile_v(D, D, name)
                tiles = [default] + ([32] if default > 32 else [])
            else:
                knob, table, key0, tiles = None, None, None, [None]
            times = {}
            for tile in tiles:
                if tile is not None:
                    table[key0] = tile
                for warps, stages in OPTIONS:
                    key = f"{warps},{stages}" + (f",{knob}={tile}" if len(tiles) > 1 else "")
                    tchunk.LAUNCH_BY_K[(name, D)] = {"num_warps": warps, "num_stages": stages}
                    try:
                        times[key] = _events_ms(call, reps=5, repeats=3)
                    except Exception as error:  # noqa: BLE001 - out of resources etc.: that option is out
                        times[key] = f"{type(error).__name__}"
            ok = {k: t for k, t in times.items() if isinstance(t, float)}
            best = min(ok, key=ok.get)
            warps, stages = map(int, best.split(",")[:2])
            tchunk.LAUNCH_BY_K[(name, D)] = {"num_warps": warps, "num_stages": stages}
            chosen[name] = {"num_warps": warps, "num_stages": stages, "times_ms": times}
            if len(tiles) > 1:
                table[key0] = int(best.split("=")[1])
                chosen[name]["tile_k" if knob == "BK" else "tile_v"] = table[key0]
            shown = {k: (round(t, 4) if isinstance(t, float) else t) for k, t in times.items()}
            print(D, name, best, shown, flush=True)
        entry["chosen"] = chosen
        entry["tuned"] = {p: _events_ms(ours[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}
        print(D, "tuned", entry["tuned"], flush=True)
        report[D] = entry
        if out:  # after every head size, so that a run stopped by its time limit keeps what it measured
            open(out, "w").write(json.dumps(report, indent=1))
        del inputs, do, long_inputs, long_do
        torch.cuda.empty_cache()
    text = json.dumps(report, indent=1)
    if out:
        open(out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None, tuple(int(a) for a in sys.argv[2:]) or (64, 128, 256))
