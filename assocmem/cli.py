"""`assocmem <command>`: the command line."""

import argparse
import sys
from pathlib import Path


def _bench_delta_rule(args):
    default_out = Path("benchmarks/results") / f"delta_rule_{args.device}.json"
    if args.device == "cuda":
        from .bench.delta_rule_gpu import run as run_gpu

        run_gpu(
            Ds=args.D or (64, 128, 256),
            Ts=args.T or (2048, 4096, 8192, 16384),
            out=None if args.no_save else (args.out or default_out),
            plot=not args.no_plot,
        )
        return
    from .bench.delta_rule import run

    default_out = Path("benchmarks/results") / f"delta_rule_{args.device}.json"
    run(
        Ts=args.T or (512, 2048, 8192),
        Ds=args.D or (64, 128),
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
        compile=args.compile,
    )


def _train(args):
    from .train import load_config, train

    cfg = load_config(args.config, args.set or [])
    result = train(cfg, resume=args.resume)
    if result.get("final"):
        print(f"\nfinal model: {result['final']}  (AutoModelForCausalLM.from_pretrained after `import assocmem`)")
        if result.get("val_ppl") is not None:
            print(f"held-out loss {result['val_loss']:.3f}, perplexity {result['val_ppl']:.2f}")
        if result.get("loss_png"):
            print(f"loss curve: {result['loss_png']}")
        if result.get("sample") is not None:
            print("sample:\n" + "-" * 60 + "\n" + result["sample"] + "\n" + "-" * 60)


def _eval(args):
    if args.prepare_tasks or args.tasks:
        return _zero_shot(args)
    if args.wikitext2:
        return _wikitext(args)
    if args.checkpoint is None:
        raise ValueError("a checkpoint is needed (or --prepare-tasks)")
    from .eval.perplexity import perplexity

    result = perplexity(args.checkpoint, corpus=args.corpus, batches=args.batches, device=args.device)
    print(
        f"{result['corpus']}: held-out loss {result['val_loss']:.4f} nats/token, perplexity {result['val_ppl']:.2f} "
        f"({result['tokens']:,} tokens)"
    )


def _wikitext(args):
    from .eval.wikitext import evaluate

    if args.checkpoint is None:
        raise ValueError("--wikitext2 needs a checkpoint to evaluate")
    data_dir = None if args.data_dir is None else Path(args.data_dir) / "wikitext2"
    r = evaluate(args.checkpoint, split=args.wikitext2, data_dir=data_dir, device=args.device)
    print(f"WikiText-2 {r['split']}: word perplexity {r['word_ppl']:.2f} ({r['words']:,} words), "
          f"{r['bits_per_byte']:.4f} bits/byte, token perplexity {r['token_ppl']:.2f} ({r['tokens']:,} tokens, "
          f"windows of {r['seq_len']})")  # fmt: skip
    if args.out is not None:
        from .bench.common import write_json

        write_json(args.out, r)


def _zero_shot(args):
    from .eval.zero_shot import TASKS, evaluate, prepare

    tasks = args.tasks or list(TASKS)
    if args.prepare_tasks:
        for task, path in prepare(tasks, args.data_dir).items():
            print(f"{task}: {len(path.read_text(encoding='utf-8').splitlines())} questions -> {path}")
        return
    if args.checkpoint is None:
        raise ValueError("--tasks needs a checkpoint to evaluate")
    result = evaluate(args.checkpoint, tasks, data_dir=args.data_dir, limit=args.limit, device=args.device,
                      batch_size=args.batch_size)  # fmt: skip
    print(f"{'task':14s} {'n':>6s} {'acc':>7s} {'acc_norm':>9s} {'chance':>7s}")
    for task, r in result["tasks"].items():
        print(f"{task:14s} {r['n']:6d} {r['acc']:7.3f} {r['acc_norm']:9.3f} {r['chance']:7.2f}")
    if args.out is not None:
        from .bench.common import write_json

        write_json(args.out, result)
        print(f"wrote {args.out}")


def _generate(args):
    import torch
    from transformers import TextStreamer

    from .eval.perplexity import load_for_inference, pick_device

    device = pick_device(args.device)
    model, tokenizer, _ = load_for_inference(args.checkpoint, device)
    ids = tokenizer(args.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)
    if ids.shape[1] == 0:
        raise SystemExit("generate: --prompt must not be empty")
    torch.manual_seed(args.seed)
    sampling = (
        dict(do_sample=False) if args.greedy else dict(do_sample=True, temperature=args.temperature, top_k=args.top_k)
    )
    model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=args.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        streamer=TextStreamer(tokenizer),
        **sampling,
    )


def _hopfield_capacity(args):
    from .experiments.capacity import CapacitySetup, run

    setup = CapacitySetup(
        dims=tuple(args.d), betas=tuple(args.beta), kinds=tuple(args.kinds), flip=args.flip,
        queries=args.queries, threshold=args.threshold, max_patterns=args.max_patterns, seed=args.seed,
    )  # fmt: skip
    run(setup, None if args.no_save else args.out, plot=not args.no_plot)


def _hopfield_retrieve(args):
    from .experiments.retrieve import RetrieveSetup, run

    setup = RetrieveSetup(per_class=args.per_class, betas=tuple(args.beta), noise=args.noise, seed=args.seed)
    run(setup, None if args.no_save else args.out, plot=not args.no_plot)


def _mil(args):
    from .experiments.mil import MILSetup, parse_grid, run

    setup = MILSetup(
        datasets=tuple(args.datasets), folds=args.folds, repeats=args.repeats, epochs=args.epochs,
        seed=args.seed, data_dir=None if args.data_dir is None else str(args.data_dir), inner_folds=args.inner_folds,
        ensemble=args.ensemble, clip=args.clip,
    )  # fmt: skip
    if args.clip is not None and not args.clip > 0:
        raise SystemExit(f"assocmem mil: --clip must be > 0, got {args.clip}")
    if args.ensemble < 1:
        raise SystemExit(f"assocmem mil: --ensemble must be >= 1, got {args.ensemble}")
    if args.grid:
        setup.grid = parse_grid(args.grid)
    run(setup, None if args.no_save else args.out, plot=not args.no_plot)


def _tabular(args):
    from .experiments.tabular import TabularSetup, run

    setup = TabularSetup(
        datasets=tuple(args.datasets) if args.datasets else None, folds=args.folds, repeats=args.repeats,
        epochs=args.epochs, seed=args.seed, mlbench_dir=args.mlbench_dir,
    )  # fmt: skip
    run(setup, None if args.no_save else args.out, plot=not args.no_plot)


def _molecules(args):
    from .experiments.molecules import MoleculeSetup, run

    setup = MoleculeSetup(
        datasets=tuple(args.datasets), splits=args.splits, epochs=args.epochs, trees=args.trees,
        svm_max_train=args.svm_max_train, seed=args.seed,
        data_dir=None if args.data_dir is None else str(args.data_dir),
    )  # fmt: skip
    run(setup, None if args.no_save else args.out, plot=not args.no_plot)


def _recall(args):
    from .experiments.recall import RecallSetup, run, save_merged

    if args.merge:
        save_merged(args.merge, None if args.no_save else args.out, plot=not args.no_plot)
        return
    setup = RecallSetup(
        mixers=tuple(args.mixers), widths=tuple(args.widths), lrs=tuple(args.lrs), vocab_size=args.vocab_size,
        seq_len=args.seq_len, num_kv_pairs=args.kv_pairs, steps=args.steps, batch=args.batch,
        test_examples=args.test_examples, head_size=args.head_size, num_heads=args.num_heads,
        max_minutes=args.max_minutes, seed=args.seed, device=args.device, workers=args.workers,
        delta_rule_backend=args.delta_rule_backend,
        compile=args.compile,
        train_kv_pairs=tuple(args.train_kv_pairs) if args.train_kv_pairs else None,
        random_fillers=args.random_fillers,
    )  # fmt: skip
    run(setup, None if args.no_save else args.out, plot=not args.no_plot)


def _convert_fla(args):
    from .models.fla_interop import convert

    direction, dst = convert(args.src, args.dst)
    print(f"converted {args.src} {direction}: {dst}")


def _result_args(parser: argparse.ArgumentParser, name: str) -> None:
    """--out, --no-save, --no-plot of an experiment whose results go to benchmarks/results/NAME.json/.png."""
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/{name}.json"), help="JSON path")
    parser.add_argument("--no-save", action="store_true", help="print the results only")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assocmem", description="Sequence models built on associative memory.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("bench", help="speed and memory benchmarks")
    benches = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    dr = benches.add_parser(
        "delta-rule",
        help="CPU: naive.py against the chunk backend; CUDA: the Triton kernels against fla and SDPA (bf16)",
    )
    dr.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    dr.add_argument(
        "--T", type=int, nargs="+", default=None, metavar="T",
        help="sequence lengths (CPU default 512 2048 8192; CUDA 2048 4096 8192 16384 at 32K tokens per batch)",
    )  # fmt: skip
    dr.add_argument(
        "--D", type=int, nargs="+", default=None, metavar="D",
        help="head sizes, K = V = D (CPU default 64 128; CUDA 64 128 256)",
    )  # fmt: skip
    dr.add_argument("--width", type=int, default=512, help="CPU: model width, H = width / D heads (default 512)")
    dr.add_argument("--batch", type=int, default=1, help="CPU: batch size")
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
    md.add_argument("--compile", action="store_true",
                    help="our models' forward and forward+backward under torch.compile (trainer: compile = true)")
    md.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/models_DEVICE.json)")
    md.add_argument("--no-save", action="store_true", help="print the table only")
    md.set_defaults(func=_bench_models)

    hop = commands.add_parser("hopfield", help="experiments of the modern-Hopfield paper: capacity, retrieval")
    hops = hop.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    cap = hops.add_parser("capacity", help="retrieval success vs number of stored patterns, per network and d")
    cap.add_argument("--d", type=int, nargs="+", default=[8, 12, 16, 20, 24, 28, 32], help="pattern dimensions")
    cap.add_argument("--beta", type=float, nargs="+", default=[1.0, 4.0, 16.0], help="β of the modern network")
    cap.add_argument("--kinds", nargs="+", default=["classical", "dense-poly", "dense-exp", "modern"],
                     choices=["classical", "dense-poly", "dense-exp", "modern"])  # fmt: skip
    cap.add_argument("--flip", type=float, default=0.1, help="fraction of signs flipped in a query")
    cap.add_argument("--queries", type=int, default=50)
    cap.add_argument("--threshold", type=float, default=0.9, help="success rate that counts as stored")
    cap.add_argument("--max-patterns", type=int, default=2**18)
    cap.add_argument("--seed", type=int, default=0)
    _result_args(cap, "hopfield_capacity")
    cap.set_defaults(func=_hopfield_capacity)
    ret = hops.add_parser("retrieve", help="digits: masked / noisy queries to fixed points for several β")
    ret.add_argument("--per-class", type=int, default=20, help="stored images per digit")
    ret.add_argument("--beta", type=float, nargs="+", default=[0.1, 0.5, 0.8, 3.0])
    ret.add_argument("--noise", type=float, default=0.6, help="std of the noise of the noisy queries")
    ret.add_argument("--seed", type=int, default=0)
    _result_args(ret, "hopfield_retrieve")
    ret.set_defaults(func=_hopfield_retrieve)

    mil = commands.add_parser("mil", help="multiple-instance learning with HopfieldPooling (10-fold CV x 5)")
    mil.add_argument("--datasets", nargs="+", default=["tiger", "fox", "elephant", "ucsb"],
                     choices=["tiger", "fox", "elephant", "ucsb", "musk1", "musk2"])  # fmt: skip
    mil.add_argument("--folds", type=int, default=10)
    mil.add_argument("--inner-folds", type=int, default=1,
                     help="choose the grid's setting by an inner k-fold CV (default 1: one 20 %% split)")  # fmt: skip
    mil.add_argument("--repeats", type=int, default=5)
    mil.add_argument("--ensemble", type=int, default=1,
                     help="retrain each outer fold's chosen setting with this many seeds and average their scores")
    mil.add_argument("--epochs", type=int, default=40)
    mil.add_argument("--clip", type=float, default=None,
                     help="clip the standardised features to [-CLIP, CLIP] (default: no clipping)")  # fmt: skip
    mil.add_argument("--seed", type=int, default=0)
    mil.add_argument("--grid", nargs="+", default=None, metavar="KEY=V1,V2",
                     help="hyperparameter grid chosen from on the inner validation split; keys lr, hidden, "
                     "beta_scale, heads, head_size, dropout, epochs, batch, lr_decay (per epoch), "
                     "norm_projected (0/1), bag_dropout (instances left out in training) "
                     "(default lr=1e-3,3e-4 beta_scale=1,4 hidden=64)")  # fmt: skip
    mil.add_argument("--data-dir", type=Path, default=None,
                     help="folder of the Tiger/Fox/Elephant .mat files (default ../shared/data/mil)")  # fmt: skip
    _result_args(mil, "mil")
    mil.set_defaults(func=_mil)

    tab = commands.add_parser("tabular", help="HopfieldLayer classifier vs SVM and random forest on small tables")
    tab.add_argument("--datasets", nargs="+", default=None,
                     help="default: scikit-learn's sets and, where r-cran-mlbench is found, the UCI ones")  # fmt: skip
    tab.add_argument("--folds", type=int, default=5)
    tab.add_argument("--repeats", type=int, default=2)
    tab.add_argument("--epochs", type=int, default=200)
    tab.add_argument("--seed", type=int, default=0)
    tab.add_argument("--mlbench-dir", default=None, help="folder of mlbench's .rda files")
    _result_args(tab, "tabular")
    tab.set_defaults(func=_tabular)

    mol = commands.add_parser("molecules", help="drug design: HopfieldLayer vs SVM and random forest on fingerprints")
    mol.add_argument("--datasets", nargs="+", default=["hiv", "bace", "bbbp", "sider"],
                     choices=["hiv", "bace", "bbbp", "sider"])  # fmt: skip
    mol.add_argument("--splits", type=int, default=3, help="random 80/10/10 splits")
    mol.add_argument("--epochs", type=int, default=30, help="Hopfield classifier epochs (best validation epoch kept)")
    mol.add_argument("--trees", type=int, default=500)
    mol.add_argument("--svm-max-train", type=int, default=10000, help="SVM training subsample cap (HIV)")
    mol.add_argument("--seed", type=int, default=0)
    mol.add_argument("--data-dir", type=Path, default=None,
                     help="folder of the MoleculeNet CSVs (default ../shared/data/moleculenet)")  # fmt: skip
    _result_args(mol, "molecules")
    mol.set_defaults(func=_molecules)

    from .experiments.recall import MIXERS

    rec = commands.add_parser("recall", help="associative recall (MQAR): DeltaNet vs linear and softmax attention")
    rec.add_argument("--mixers", nargs="+", default=list(MIXERS), choices=list(MIXERS))
    rec.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512])
    rec.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="learning rates swept per point")
    rec.add_argument("--vocab-size", type=int, default=8192)
    rec.add_argument("--seq-len", type=int, default=512)
    rec.add_argument("--kv-pairs", type=int, default=64)
    rec.add_argument("--steps", type=int, default=2000, help="training steps per run (fresh batches each step)")
    rec.add_argument("--batch", type=int, default=64)
    rec.add_argument("--train-kv-pairs", type=int, nargs="+", default=None,
                     help="train on batches cycling through these numbers of pairs (test: --kv-pairs)")  # fmt: skip
    rec.add_argument("--random-fillers", action="store_true",
                     help="filler tokens drawn at random (default: token 0, as in the paper's setting)")  # fmt: skip
    rec.add_argument("--test-examples", type=int, default=1000)
    rec.add_argument("--head-size", type=int, default=64)
    rec.add_argument("--num-heads", type=int, default=None,
                     help="the same number of heads at every width (head size width / N), not --head-size")  # fmt: skip
    rec.add_argument("--max-minutes", type=float, default=None, help="per run: stop training after this long")
    rec.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    rec.add_argument("--workers", type=int, default=1, help="runs at once, each in its own process")
    rec.add_argument("--compile", action="store_true",
                     help="torch.compile each run's training forward (fewer kernel launches: faster on a GPU)")
    rec.add_argument("--delta-rule-backend", default="auto", choices=["auto", "chunk", "naive"],
                     help="the DeltaNet layers' delta-rule backend (auto: Triton on CUDA)")  # fmt: skip
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                     help="train nothing: merge these results of one task (best per point over all runs)")  # fmt: skip
    _result_args(rec, "mqar")
    rec.set_defaults(func=_recall)

    tr = commands.add_parser("train", help="train a language model (TOML config; torchrun for several processes)")
    tr.add_argument("config", nargs="?", default=None, help="TOML config (configs/tiny.toml); none: the defaults")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (model.KEY too)")
    tr.add_argument("--resume", metavar="PATH", help="continue from a checkpoint or a run folder's newest one")
    tr.set_defaults(func=_train)

    ev = commands.add_parser("eval", help="held-out perplexity of a trained model, or zero-shot tasks (lm-eval)")
    ev.add_argument("checkpoint", nargs="?", default=None, help="run folder, checkpoint folder or final model folder")
    ev.add_argument("--corpus", default=None, help="another corpus (stdlib, a folder, hf:NAME); default: the run's")
    ev.add_argument("--batches", type=int, default=50)
    ev.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                    help="zero-shot accuracy with lm-eval instead of perplexity: arc_easy arc_challenge piqa "
                    "hellaswag openbookqa")  # fmt: skip
    ev.add_argument("--limit", type=int, default=None, help="--tasks: the first N questions of each task")
    ev.add_argument("--batch-size", type=int, default=16, help="--tasks: sequences per forward pass in lm-eval")
    ev.add_argument("--data-dir", type=Path, default=None,
                    help="--tasks / --wikitext2: raw files (default ../shared/data/eval)")
    ev.add_argument("--prepare-tasks", action="store_true",
                    help="write the tasks' normalised files to .cache/eval/ (to run lm_eval directly)")  # fmt: skip
    ev.add_argument("--wikitext2", nargs="?", const="test", default=None, choices=["test", "valid"],
                    help="perplexity on WikiText-2's word-level file instead (data-dir/wikitext2/; default split: "
                    "test): word perplexity, bits per byte, token perplexity")  # fmt: skip
    ev.add_argument("--out", type=Path, default=None, help="--tasks / --wikitext2: JSON of the results")
    ev.set_defaults(func=_eval)

    ge = commands.add_parser("generate", help="stream text from a trained model")
    ge.add_argument("checkpoint", help="run folder, checkpoint folder or final model folder")
    ge.add_argument("--prompt", required=True)
    ge.add_argument("--max-new-tokens", type=int, default=200)
    ge.add_argument("--temperature", type=float, default=0.8)
    ge.add_argument("--top-k", type=int, default=40)
    ge.add_argument("--greedy", action="store_true")
    ge.add_argument("--seed", type=int, default=0)
    ge.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ge.set_defaults(func=_generate)

    conv = commands.add_parser("convert", help="checkpoints of other libraries to ours and back")
    conv_from = conv.add_subparsers(dest="library", required=True, metavar="LIBRARY")
    cf = conv_from.add_parser("fla", help="flash-linear-attention DeltaNet <-> assocmem (direction from SRC's config)")
    cf.add_argument("src", type=Path, help="Hugging Face checkpoint folder (model_type delta_net or assocmem)")
    cf.add_argument("dst", type=Path, help="new folder for the converted checkpoint")
    cf.set_defaults(func=_convert_fla)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"assocmem {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
