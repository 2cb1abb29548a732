"""`assocmem <command>`: the command line."""

import argparse
import sys
from pathlib import Path


def _bench_delta_rule(args):
    from .bench.delta_rule import run

    default_out = Path("benchmarks/results") / f"delta_rule_{args.device}.json"
    run(
        Ts=args.T,
        Ds=args.D,
        width=args.width,
        batch=args.batch,
        device=args.device,
        out=None if args.no_save else (args.out or default_out),
        plot=not args.no_plot,
        measure_memory=not args.no_memory,
    )


def _bench_hopfield(args):
    from .bench.hopfield import run

    default_out = Path("benchmarks/results") / f"hopfield_{args.device}.json"
    run(
        Ls=args.L,
        steps_list=args.steps,
        heads=args.heads,
        head_size=args.head_size,
        batch=args.batch,
        device=args.device,
        out=None if args.no_save else (args.out or default_out),
        plot=not args.no_plot,
        measure_memory=not args.no_memory,
    )


def _bench_models(args):
    from .bench.models import run

    default_out = Path("benchmarks/results") / f"models_{args.device}.json"
    run(
        size=args.size,
        architectures=args.arch,
        batch=args.batch,
        seq_len=args.seq_len,
        decode_batch=args.decode_batch,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        device=args.device,
        with_fla=not args.no_fla,
        out=None if args.no_save else (args.out or default_out),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assocmem", description="Sequence models built on associative memory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="speed and memory benchmarks")
    benches = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    dr = benches.add_parser("delta-rule", help="naive.py against the chunk backend: time and peak memory")
    dr.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    dr.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192], metavar="T", help="sequence lengths")
    dr.add_argument("--D", type=int, nargs="+", default=[64, 128], metavar="D", help="head sizes (K = V = D)")
    dr.add_argument("--width", type=int, default=512, help="model width: H = width / D heads (default 512)")
    dr.add_argument("--batch", type=int, default=1)
    dr.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/delta_rule_DEVICE.json)"
    )
    dr.add_argument("--no-save", action="store_true", help="print the table only")
    dr.add_argument("--no-plot", action="store_true", help="write no PNG")
    dr.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    dr.set_defaults(func=_bench_delta_rule)

    hp = benches.add_parser("hopfield", help="Hopfield retrieval through SDPA vs the materialised association matrix")
    hp.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    hp.add_argument("--L", type=int, nargs="+", default=[1024, 4096, 16384], metavar="L", help="L = S sizes")
    hp.add_argument("--steps", type=int, nargs="+", default=[1, 3], help="update steps")
    hp.add_argument("--heads", type=int, default=4)
    hp.add_argument("--head-size", type=int, default=64)
    hp.add_argument("--batch", type=int, default=1)
    hp.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/hopfield_DEVICE.json)"
    )
    hp.add_argument("--no-save", action="store_true", help="print the table only")
    hp.add_argument("--no-plot", action="store_true", help="write no PNG")
    hp.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    hp.set_defaults(func=_bench_hopfield)

    from .models.presets import ARCHITECTURES, SIZES

    md = benches.add_parser("models", help="tokens/s of the language-model presets: forward, training, decoding")
    md.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    md.add_argument("--size", default="tiny", choices=list(SIZES))
    md.add_argument("--arch", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    md.add_argument("--batch", type=int, default=4)
    md.add_argument("--seq-len", type=int, default=512)
    md.add_argument("--decode-batch", type=int, default=1)
    md.add_argument("--prompt-len", type=int, default=64)
    md.add_argument("--new-tokens", type=int, default=64)
    md.add_argument("--no-fla", action="store_true", help="leave out flash-linear-attention's DeltaNet (GPU)")
    md.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/models_DEVICE.json)")
    md.add_argument("--no-save", action="store_true", help="print the table only")
    md.set_defaults(func=_bench_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
