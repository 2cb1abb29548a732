"""The WY forward kernel alone on the GPU (A, and P as a training forward stores it), under several chunk
settings in alternating rounds, so that a change to that kernel is seen without the rest of the pipeline.
Each variant's A (and P) is first compared with the defaults' (max abs difference, A's entries are O(1)).
Usage: python scripts/time_wy_fwd.py OUT.json --variants FILE.json [--D 64 128 256] [--T 2048] [--rounds 5]
Variants as in scripts/ab_triton.py ({NAME: {chunk attribute: value}}).
Shapes: 32K tokens, H = 2048 / D, bf16 unless --dtype.
"""

import argparse
import functools
import json
import statistics

import torch
from ab_triton import report_failure, under

from assocmem.bench import delta_rule_gpu as bench
from assocmem.ops.delta_rule.triton import chunk as tchunk


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--variants", required=True)
    parser.add_argument("--D", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--T", type=int, nargs="+", default=[2048])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store-p", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args(argv)
    with open(args.variants) as f:
        variants = json.load(f)
    report = {"variants": variants, "rows": []}
    for D in args.D:
        H = bench.WIDTH // D
        for T in args.T:
            B = max(1, bench.TOKENS // T)
            q, k, _, beta = bench._inputs(B, T, H, D, "cuda", getattr(torch, args.dtype))
            chunks = tchunk._Chunks(B, T, None)
            for store_p in map(bool, args.store_p):
                half_a = q.dtype == torch.bfloat16
                call = functools.partial(tchunk._wy_fwd, q, k, beta, D**-0.5, chunks, half_a=half_a, store_p=store_p)

                base = call()
                row = {"D": D, "T": T, "B": B, "H": H, "store_p": store_p}
                calls = {}
                for name, settings in variants.items():
                    turn = under(settings, call)
                    try:
                        A, P = turn()
                    except Exception as e:  # noqa: BLE001
                        report_failure(row, name, f"D={D}", e)
                        continue
                    r = torch.arange(A.shape[1], device=A.device) % 64
                    lower = (r[:, None] >= torch.arange(64, device=A.device)[None, :])[None, :, None, :]
                    diff = (torch.where(lower, A.float(), 0) - torch.where(lower, base[0].float(), 0)).abs().max()
                    row[f"{name}_A_diff"] = diff.item()
                    if store_p:
                        row[f"{name}_P_diff"] = (P.float() - base[1].float()).abs().max().item()
                    calls[name] = turn
                times = bench.interleaved_times(calls, lambda fn: bench._events_ms(fn, reps=20, repeats=3),
                                                rounds=args.rounds)
                for name, ts in times.items():
                    row[f"{name}_ms"] = statistics.median(ts)
                    row[f"{name}_rounds"] = ts
                row["dtype"] = args.dtype
                report["rows"].append(row)
                line = "  ".join(f"{n} {row[f'{n}_ms']:.4f} (A {row[f'{n}_A_diff']:.1e})" for n in times)
                print(f"WY forward D={D} T={T} B={B} P={store_p}: {line}", flush=True)
                with open(args.out, "w") as f:
                    json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
