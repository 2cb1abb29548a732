"""Launch settings of the Triton chunk kernels on this GPU: one kernel at a time, the rest fixed.

For each head size D (T = 4096, B = 8, H = 2048 / D, bf16), times forward and forward+backward with the
defaults and with fla's chunk_delta_rule beside them, then tries (num_warps, num_stages) per kernel and
keeps the fastest (coordinate descent). Prints the table and writes JSON to the path given (or stdout).
"""

import json
import sys

import torch

from assocmem import delta_rule
from assocmem.bench.delta_rule_gpu import _events_ms, _fla, _inputs, _runner
from assocmem.ops.delta_rule.triton import chunk as tchunk

OPTIONS = [(2, 2), (4, 1), (4, 2), (4, 3), (8, 1), (8, 2), (8, 3)]
FWD_KERNELS = ("wy_fwd", "state_fwd")


def main(out=None):
    torch.manual_seed(0)
    fla_chunk, _, _ = _fla()
    report = {}
    for D in (64, 128, 256):
        H, T, B = 2048 // D, 4096, 8
        inputs = _inputs(B, T, H, D, "cuda")
        do = torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16)
        ours = {bw: _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0], inputs, do, bw)
                for bw in (False, True)}  # fmt: skip
        entry = {"default": {p: _events_ms(ours[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}}
        if fla_chunk is not None:
            fla = {bw: _runner(lambda q, k, v, b: fla_chunk(q, k, v, b)[0], inputs, do, bw) for bw in (False, True)}
            entry["fla"] = {p: _events_ms(fla[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}
        print(D, entry, flush=True)
        chosen = {}
        for name in tchunk.LAUNCH:
            call = ours[False] if name in FWD_KERNELS else ours[True]
            # dqkw also tries one key tile per head (it re-reads V', dV', dO once per tile)
            tiles = [tchunk.DQKW_TILE_K[D]] + ([D] if name == "dqkw" and D > tchunk.DQKW_TILE_K[D] else [])
            times = {}
            for tile in tiles:
                tchunk.DQKW_TILE_K[D] = tile
                for warps, stages in OPTIONS:
                    key = f"{warps},{stages}" + (f",BK={tile}" if len(tiles) > 1 else "")
                    tchunk.LAUNCH_BY_K[(name, D)] = {"num_warps": warps, "num_stages": stages}
                    try:
                        times[key] = _events_ms(call, reps=5, repeats=3)
                    except Exception as error:  # noqa: BLE001 - out of resources etc.: that option is out
                        times[key] = f"{type(error).__name__}"
            ok = {k: t for k, t in times.items() if isinstance(t, float)}
            best = min(ok, key=ok.get)
            warps, stages = map(int, best.split(",")[:2])
            if len(tiles) > 1:
                tchunk.DQKW_TILE_K[D] = int(best.split("BK=")[1])
            tchunk.LAUNCH_BY_K[(name, D)] = {"num_warps": warps, "num_stages": stages}
            chosen[name] = {"num_warps": warps, "num_stages": stages, "times_ms": times}
            if name == "dqkw":
                chosen[name]["tile_k"] = tchunk.DQKW_TILE_K[D]
            shown = {k: (round(t, 4) if isinstance(t, float) else t) for k, t in times.items()}
            print(D, name, best, shown, flush=True)
        entry["chosen"] = chosen
        entry["tuned"] = {p: _events_ms(ours[bw], reps=10) for p, bw in (("fwd", False), ("fwd+bwd", True))}
        print(D, "tuned", entry["tuned"], flush=True)
        report[D] = entry
        del inputs, do
        torch.cuda.empty_cache()
    text = json.dumps(report, indent=1)
    if out:
        open(out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
