"""Alternating timings of Triton chunk-kernel options on the GPU, fla's chunk_delta_rule in the same rounds.

Each variant sets attributes of assocmem.ops.delta_rule.triton.chunk before its turn (JSON values; a dict
replaces the whole attribute, or updates it where the name ends in "+": {"LAUNCH_BY_K+": {"wy_bwd,128": {...}}};
a key "name,128" becomes the tuple ("name", 128) and a key "128" the number 128). Every round times each variant
and fla once at each shape and pass, so that a drift of the card's clocks reaches all of them alike (NOTES.md
reports the medians and the per-round ratios). Before timing, each variant's output (and gradients) are checked
against the float32 PyTorch chunk path: a variant off by more than the bf16 bound is reported and not timed.
Usage: python scripts/ab_triton.py OUT.json [--variant NAME='{"ATTR": value, ...}' ...] [--variants FILE.json]
       [--D 128] [--T 2048 16384] [--rounds 5] [--passes fwd fwd+bwd] [--dtype float32]
Shapes: 32K tokens per batch, H = 2048 / D, bf16 (the benchmark's) unless --dtype says otherwise.
"""

import argparse
import json
import statistics

import torch

from assocmem import delta_rule
from assocmem.bench import delta_rule_gpu as bench
from assocmem.ops.delta_rule.triton import chunk as tchunk


def _key(key):
    """A JSON object key as the chunk module's tables have them: "name,128" -> ("name", 128), "128" -> 128."""
    if not isinstance(key, str):
        return key
    if "," in key:
        return tuple(int(part) if part.isdigit() else part for part in key.split(","))
    return int(key) if key.isdigit() else key


def _value(value):
    return {_key(k): v for k, v in value.items()} if isinstance(value, dict) else value


def _apply(settings: dict) -> dict:
    """Set the chunk module's attributes; returns the values they had (to set back)."""
    before = {}
    for name, value in settings.items():
        merge = name.endswith("+")
        name = name.rstrip("+")
        if not hasattr(tchunk, name):
            raise ValueError(f"--variant: chunk has no attribute {name!r}")
        current = getattr(tchunk, name)
        before[name] = current
        setattr(tchunk, name, {**current, **_value(value)} if merge else _value(value))
    return before


def under(settings: dict, call):
    """`call` as a function that runs it with the chunk module's attributes set to `settings`, then set back."""

    def turn():
        before = _apply(settings)
        try:
            return call()
        finally:
            _apply(before)

    return turn


def report_failure(row: dict, name: str, where: str, error: Exception) -> None:
    """A variant that fails to build or run is reported in the console and its row, and not timed."""
    text = f"{type(error).__name__}: {str(error)[:300]}"
    print(f"{name} failed at {where}: {text}", flush=True)
    row[f"{name}_error"] = text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON object of chunk attributes")
    parser.add_argument("--variants", help="a JSON file of {NAME: {attribute: value}} (after any --variant)")
    parser.add_argument("--D", type=int, nargs="+", default=[128])
    parser.add_argument("--T", type=int, nargs="+", default=[2048, 4096, 16384])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--passes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                        help="the inputs' dtype (default: the benchmark's bfloat16)")
    args = parser.parse_args(argv)
    variants = {}
    for item in args.variant:
        name, _, text = item.partition("=")
        variants[name] = json.loads(text)
    if args.variants:
        with open(args.variants) as f:
            variants.update(json.load(f))
    if not variants:
        parser.error("give at least one --variant or a --variants file")
    fla_chunk, _, fla_error = bench._fla()
    dtype = getattr(torch, args.dtype)
    report = {"variants": variants, "fla": fla_error or "fla 0.6.0 chunk_delta_rule", "dtype": args.dtype, "rows": []}
    ours = lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0]  # noqa: E731
    for D in args.D:
        H = bench.WIDTH // D
        for T in args.T:
            B = max(1, bench.TOKENS // T)
            inputs = bench._inputs(B, T, H, D, "cuda", dtype)
            do = torch.randn(B, T, H, D, device="cuda", dtype=dtype)
            reference = bench._runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="chunk")[0], inputs, do, True)()
            for pass_ in args.passes:
                backward = pass_ == "fwd+bwd"
                row = {"D": D, "T": T, "B": B, "H": H, "pass": pass_}
                calls = {}
                for name, settings in variants.items():
                    turn = under(settings, bench._runner(ours, inputs, do, backward))
                    try:
                        err = max(bench._rel_err(a, b) for a, b in zip(turn(), reference))
                    except Exception as e:  # noqa: BLE001
                        report_failure(row, name, f"D={D} T={T} {pass_}", e)
                        continue
                    row[f"{name}_err"] = err
                    if err > bench.BF16_BOUND or err != err:
                        print(f"{name} off by {err:.2e} at D={D} T={T} {pass_}: not timed", flush=True)
                        continue
                    calls[name] = turn
                if fla_chunk is not None and dtype != torch.float32:  # (fla 0.6.0's chunk refuses float32)
                    calls["fla"] = bench._runner(lambda q, k, v, b: fla_chunk(q, k, v, b)[0], inputs, do, backward)
                times = bench.interleaved_times(calls, lambda fn: bench._events_ms(fn, reps=args.reps, repeats=3),
                                          rounds=args.rounds)  # fmt: skip
                for name, ts in times.items():
                    row[f"{name}_ms"] = statistics.median(ts)
                    row[f"{name}_rounds"] = ts
                    if "fla" in times and name != "fla":
                        row[f"{name}_vs_fla"] = statistics.median([f / t for f, t in zip(times["fla"], ts)])
                report["rows"].append(row)
                line = "  ".join(f"{n} {row[f'{n}_ms']:.3f}" + (f" ({row[f'{n}_vs_fla']:.2f}x)" if f"{n}_vs_fla" in row
                                 else "") for n in times)  # fmt: skip
                print(f"D={D} T={T} B={B} {pass_}: {line}", flush=True)
                with open(args.out, "w") as f:
                    json.dump(report, f, indent=1)
            del inputs, do, reference
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
