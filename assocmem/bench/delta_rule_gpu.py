"""`assocmem bench delta-rule --device cuda`: our Triton kernels against flash-linear-attention and SDPA.

One run, on one GPU, in bfloat16:
- the card's ceilings, measured first: a large bf16 matmul (TFLOP/s) and a large copy (TB/s);
- training shapes: 32K tokens per batch (B = 32768 / T), model width 2048 (H = 2048 / D), for every
  D and T: forward and forward+backward of ours (`backend="triton"`), fla's `chunk_delta_rule` and
  PyTorch's causal SDPA (flash attention) on the same inputs. Before anything is timed, ours and fla's
  outputs and gradients are compared with our PyTorch chunk path (float32 math) on the same inputs; ours
  must be within the bf16 bound (relative RMS 1e-2) or the run stops;
- decoding: one token per call at batch 1, 16, 64 (D = 128, 16 heads), state in float32: ours (in
  place), fla's `fused_recurrent_delta_rule`, and the PyTorch step; per-token latency as the mean of 200
  back-to-back calls, in rounds that alternate the three (a step is bound by the host, whose speed drifts
  within a run), reported as the median over the rounds, with fla/ours per round and its range.

FLOP counts (per token and head, chunk C = 64): forward 2 (3 C K + 2 C V + 3 K V) — the matmuls of the
chunkwise algorithm; forward+backward counts 3x the forward. SDPA: causal 2 T D per token and head for
each of its two matmuls; forward+backward 3x. The bytes are the least any implementation must move:
forward reads q, k, v, beta and writes o; the backward also reads q, k, v, beta, do and writes dq, dk,
dv, dbeta. TB/s is that floor over the time taken.
"""

import statistics
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ..ops.delta_rule import delta_rule, delta_rule_step
from .common import RESULTS_DIR, CudaPeakMemory, format_table, machine_info, pyplot, save_results, write_json

TOKENS = 32768
WIDTH = 2048
BF16_BOUND = 1e-2

COLUMNS = [
    ("D", "D", "d"),
    ("T", "T", "d"),
    ("B", "B", "d"),
    ("H", "H", "d"),
    ("pass", "pass", "s"),
    ("ours_ms", "ours ms", ".3f"),
    ("fla_ms", "fla ms", ".3f"),
    ("sdpa_ms", "SDPA ms", ".3f"),
    ("vs_fla", "fla/ours", ".2f"),
    ("ours_tflops", "ours TFLOP/s", ".0f"),
    ("ours_tbps", "ours TB/s", ".2f"),
    ("ours_peak_gb", "ours GB", ".2f"),
    ("fla_peak_gb", "fla GB", ".2f"),
    ("ours_err", "ours err", ".1e"),
    ("fla_err", "fla err", ".1e"),
]
DECODE_COLUMNS = [
    ("B", "B", "d"),
    ("ours_us", "ours us", ".1f"),
    ("fla_us", "fla us", ".1f"),
    ("torch_us", "PyTorch step us", ".1f"),
    ("vs_fla", "fla/ours", ".2f"),
    ("vs_fla_min", "min", ".2f"),
    ("vs_fla_max", "max", ".2f"),
    ("ours_tbps", "ours TB/s", ".2f"),
    ("ours_err", "ours err", ".1e"),
    ("fla_err", "fla err", ".1e"),
]


def _events_ms(fn, reps: int, warmup: int = 3, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time of `reps` back-to-back calls, CUDA events, in ms."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def interleaved_times(fns: dict, time_one, rounds: int = 7) -> dict:
    """Time each callable of `fns` once per round, in turn, for `rounds` rounds (`time_one(fn)` -> seconds or
    ms), so that a drift of the host's speed reaches all of them alike. Returns {name: [time per round]}."""
    if rounds < 1:
        raise ValueError(f"interleaved_times: rounds must be >= 1, got {rounds}")
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(time_one(fn))
    return times


def ratio_summary(times: dict, num: str, den: str) -> dict:
    """The per-round ratio times[num] / times[den]: its median, min and max."""
    ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
    return {"ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def measure_ceilings(device) -> dict:
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    ms = _events_ms(partial(torch.matmul, a, b), reps=10)
    tflops = 2 * n**3 / (ms * 1e-3) / 1e12
    del a, b
    x = torch.empty(2**30, device=device, dtype=torch.uint8)
    y = torch.empty_like(x)
    ms_copy = _events_ms(partial(y.copy_, x), reps=10)
    tbps = 2 * x.numel() / (ms_copy * 1e-3) / 1e12
    del x, y
    torch.cuda.empty_cache()
    return {"bf16_matmul_tflops": tflops, "copy_tbps": tbps, "how": "8192^3 bf16 matmul; 1 GiB device copy"}


def delta_rule_flops(tokens: int, H: int, K: int, V: int, backward: bool, C: int = 64) -> float:
    forward = 2 * (3 * C * K + 2 * C * V + 3 * K * V) * tokens * H
    return 3 * forward if backward else forward


def delta_rule_bytes(tokens: int, H: int, K: int, V: int, backward: bool, itemsize: int = 2) -> float:
    per_token = (2 * K + 2 * V + 1) * itemsize  # q, k, v, beta in; o out
    if backward:
        per_token += (2 * K + 2 * V + 1 + 2 * K + V + 1) * itemsize  # q, k, v, beta, do in; dq, dk, dv, dbeta out
    return per_token * tokens * H


def _inputs(B, T, H, D, device, dtype=torch.bfloat16):
    q = torch.randn(B, T, H, D, device=device, dtype=dtype)
    k = F.normalize(torch.randn(B, T, H, D, device=device), dim=-1).to(dtype)
    v = torch.randn(B, T, H, D, device=device, dtype=dtype)
    beta = torch.rand(B, T, H, device=device, dtype=dtype)
    return q, k, v, beta


def _rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def _fla():
    try:
        from fla.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule
    except Exception as error:  # noqa: BLE001 - any import failure means "no peer"
        return None, None, f"{type(error).__name__}: {error}"
    return chunk_delta_rule, fused_recurrent_delta_rule, None


def _runner(fn, inputs, do, backward):
    leaves = [x.detach().clone().requires_grad_(backward) for x in inputs]

    def call():
        for x in leaves:
            x.grad = None
        o = fn(*leaves)
        if backward:
            o.backward(do)
        return [o.detach()] + ([x.grad for x in leaves] if backward else [])

    return call


def _peak_gb(call, device):
    with CudaPeakMemory(device) as mem:
        call()
    return mem.peak_bytes / 2**30


def training_rows(Ds, Ts, device, fla_chunk, with_sdpa=True, reps=10, on_row=None):
    rows = []
    for D in Ds:
        H = WIDTH // D
        for T in Ts:
            B = max(1, TOKENS // T)
            inputs = _inputs(B, T, H, D, device)
            do = torch.randn(B, T, H, D, device=device, dtype=torch.bfloat16)
            methods = {"ours": lambda q, k, v, b: delta_rule(q, k, v, b, backend="triton")[0]}
            if fla_chunk is not None:
                methods["fla"] = lambda q, k, v, b: fla_chunk(q, k, v, b)[0]
            reference = _runner(lambda q, k, v, b: delta_rule(q, k, v, b, backend="chunk")[0], inputs, do, True)()
            for backward in (False, True):
                row = {"D": D, "T": T, "B": B, "H": H, "pass": "fwd+bwd" if backward else "fwd"}
                for name, fn in methods.items():
                    call = _runner(fn, inputs, do, backward)
                    try:
                        outputs = call()
                    except Exception as error:  # noqa: BLE001 - recorded in the row, the run goes on
                        row[f"{name}_failed"] = f"{type(error).__name__}: {str(error)[:200]}"
                        print(f"{name} failed at D={D} T={T} {row['pass']}: {row[f'{name}_failed']}", flush=True)
                        continue
                    err = max(_rel_err(a, b) for a, b in zip(outputs, reference))
                    row[f"{name}_err"] = err
                    if name == "ours" and err > BF16_BOUND:
                        raise RuntimeError(
                            f"Triton kernels off by {err:.2e} > {BF16_BOUND} at D={D} T={T} {row['pass']}"
                        )
                    del outputs
                    row[f"{name}_ms"] = _events_ms(call, reps=reps)
                    row[f"{name}_peak_gb"] = _peak_gb(call, device)
                    flops = delta_rule_flops(B * T, H, D, D, backward)
                    row[f"{name}_tflops"] = flops / (row[f"{name}_ms"] * 1e-3) / 1e12
                    row[f"{name}_tbps"] = delta_rule_bytes(B * T, H, D, D, backward) / (row[f"{name}_ms"] * 1e-3) / 1e12
                if with_sdpa:
                    qs, ks, vs = (x.transpose(1, 2).contiguous() for x in inputs[:3])

                    def sdpa(q, k, v):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

                    call = _runner(sdpa, (qs, ks, vs), do.transpose(1, 2).contiguous(), backward)
                    row["sdpa_ms"] = _events_ms(call, reps=reps)
                    sdpa_flops = 2 * 2 * T * D * H * B * T / 2 * (3 if backward else 1)
                    row["sdpa_tflops"] = sdpa_flops / (row["sdpa_ms"] * 1e-3) / 1e12
                if "fla_ms" in row and "ours_ms" in row:
                    row["vs_fla"] = row["fla_ms"] / row["ours_ms"]
                rows.append(row)
                print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
                if on_row is not None:
                    on_row(rows)
            del inputs, do, reference
            torch.cuda.empty_cache()
    return rows


def _decode_row(B, H, D, device, fla_recurrent, reps, rounds=7):
    scale = D**-0.5
    q, k, v, beta = _inputs(B, 1, H, D, device)
    state = torch.randn(B, H, D, D, device=device) * 0.1
    ref_o, _ = delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], state.clone(), scale=scale)
    row = {"B": B, "H": H, "D": D}
    s = state.clone()

    def ours():  # the public step, state advanced in place (the fused kernel on CUDA)
        return delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], s, scale=scale, inplace=True)[0]

    def pytorch():
        return delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], state, scale=scale)[0]

    row["ours_err"] = _rel_err(ours(), ref_o)
    if row["ours_err"] > BF16_BOUND:
        raise RuntimeError(f"decode kernel off by {row['ours_err']:.2e} at B={B}")
    fns = {"ours": ours, "torch": pytorch}
    if fla_recurrent is not None:

        def fla():
            return fla_recurrent(q, k, v, beta, scale=scale, initial_state=state, output_final_state=True)[0]

        row["fla_err"] = _rel_err(fla()[:, 0], ref_o)
        fns["fla"] = fla
    times = interleaved_times(fns, lambda fn: 1e3 * _events_ms(fn, reps=reps, repeats=1), rounds=rounds)
    row["rounds_us"] = times
    for name, per_round in times.items():
        row[f"{name}_us"] = statistics.median(per_round)
    if "fla" in fns:
        summary = ratio_summary(times, "fla", "ours")
        row.update(vs_fla=summary["ratio"], vs_fla_min=summary["ratio_min"], vs_fla_max=summary["ratio_max"])
    state_bytes = 2 * state.numel() * 4  # the state is read and written once per token
    row["ours_tbps"] = state_bytes / (row["ours_us"] * 1e-6) / 1e12
    return row


def decode_rows(batches, device, fla_recurrent, H=16, D=128, reps=200):
    rows = []
    for B in batches:
        rows.append(_decode_row(B, H, D, device, fla_recurrent, reps))
        print(format_table([rows[-1]], DECODE_COLUMNS).splitlines()[-1], flush=True)
    return rows


def _triton_settings() -> dict:
    """The kernel settings this run used (a sweep's choice where ASSOCMEM_TRITON_TUNED named one)."""
    import os

    from ..ops.delta_rule.triton import chunk as tchunk

    return {
        "tuned_from": os.environ.get("ASSOCMEM_TRITON_TUNED"),
        "keep_states": tchunk.KEEP_STATES,
        "storage": {"half_a": tchunk.HALF_A, "half_dw": tchunk.HALF_DW, "half_vprime": tchunk.HALF_VPRIME,
                    "store_p": dict(tchunk.STORE_P), "split_output": tchunk.SPLIT_OUTPUT},
        "half_operands": dict(tchunk.HALF_OPERANDS),
        "launch_by_k": {f"{name},{K}": options for (name, K), options in tchunk.LAUNCH_BY_K.items()},
        "tiles": {"dqkw_k": tchunk.DQKW_TILE_K, "dqkw_v": tchunk.DQKW_TILE_V, "wy_bwd": tchunk.WY_BWD_TILE,
                  "state_v": {f"{name},{K}": v for (name, K), v in tchunk.STATE_TILE_V.items()}},
    }


def run(
    Ds=(64, 128, 256),
    Ts=(2048, 4096, 8192, 16384),
    decode_batches=(1, 16, 64),
    out: Path | None = RESULTS_DIR / "delta_rule_cuda.json",
    plot: bool = True,
) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    fla_chunk, fla_recurrent, fla_missing = _fla()
    if fla_missing:
        print(f"flash-linear-attention not importable ({fla_missing}): no fla columns")
    ceilings = measure_ceilings(device)
    print(
        f"card ceilings: {ceilings['bf16_matmul_tflops']:.0f} TFLOP/s bf16 matmul, "
        f"{ceilings['copy_tbps']:.2f} TB/s copy"
    )
    print(format_table([], COLUMNS))
    machine = machine_info(device)

    def partial(rows):  # so that a run cut short still leaves what it measured, marked as partial
        if out is not None:
            write_json(Path(out), {"benchmark": "delta_rule_cuda", "partial": True, "machine": machine,
                                   "ceilings": ceilings, "rows": rows})  # fmt: skip

    rows = training_rows(Ds, Ts, device, fla_chunk, on_row=partial)
    print(format_table([], DECODE_COLUMNS))
    dec = decode_rows(decode_batches, device, fla_recurrent)
    try:
        import fla

        fla_version = getattr(fla, "__version__", "unknown")
    except Exception:  # noqa: BLE001
        fla_version = None
    result = {
        "benchmark": "delta_rule_cuda",
        "machine": machine,
        "ceilings": ceilings,
        "setup": {
            "dtype": "bfloat16 inputs, float32 state",
            "tokens_per_batch": TOKENS,
            "width": WIDTH,
            "fla": fla_version,
            "timing": "CUDA events; median of 5 repeats of the mean of 10 back-to-back calls (decode: the mean "
                      "of 200 calls per round, 7 rounds alternating ours, PyTorch and fla; medians over the rounds, "
                      "fla/ours per round and its range)",
            "verified": f"ours within relative RMS {BF16_BOUND} of the PyTorch chunk path (fp32 math), "
            "outputs and every gradient; fla's error reported beside it",
            "flops": __doc__.split("FLOP counts")[1].strip(),
            "triton_settings": _triton_settings(),
        },
        "rows": rows,
        "decode": dec,
        "summary": _summary(rows, dec),
    }
    print()
    print(format_table(rows, COLUMNS))
    print()
    print(format_table(dec, DECODE_COLUMNS))
    for line in result["summary"]["lines"]:
        print(line)
    save_results(result, out, (lambda png: _plot(rows, dec, png, result)) if plot else None)
    return result


def _summary(rows, dec):
    lines = []
    summary = {}
    for D in sorted({r["D"] for r in rows}):
        for pass_ in ("fwd", "fwd+bwd"):
            ratios = [r["vs_fla"] for r in rows if r["D"] == D and r["pass"] == pass_ and "vs_fla" in r]
            if ratios:
                summary[f"D{D}_{pass_}_min_vs_fla"] = min(ratios)
                lines.append(
                    f"D={D} {pass_}: ours is {min(ratios):.2f}x..{max(ratios):.2f}x fla's speed over T "
                    f"(target: >= 1.5x at D=128, >= 1.0x at D=64/256)"
                )
    ratios = [d["vs_fla"] for d in dec if "vs_fla" in d]
    if ratios:
        summary["decode_min_vs_fla"] = min(ratios)
        lines.append(f"decode: fla latency / ours (median over rounds) {min(ratios):.2f}x..{max(ratios):.2f}x "
                     "(target >= 1.0x)")
    summary["lines"] = lines
    return summary


def _plot(rows, dec, path: Path, result):
    plt = pyplot()
    if plt is None:
        return None
    Ds = sorted({r["D"] for r in rows})
    fig, axes = plt.subplots(1, len(Ds) + 1, figsize=(4.2 * (len(Ds) + 1), 4))
    for ax, D in zip(axes, Ds):
        for pass_, style in (("fwd", "-"), ("fwd+bwd", "--")):
            sel = sorted((r for r in rows if r["D"] == D and r["pass"] == pass_), key=lambda r: r["T"])
            Ts = [r["T"] for r in sel]
            for name, color in (("ours", "C0"), ("fla", "C1"), ("sdpa", "C2")):
                if all(f"{name}_ms" in r for r in sel):
                    ax.plot(Ts, [r[f"{name}_ms"] for r in sel], style, color=color, marker="o", label=f"{name} {pass_}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (B = 32768 / T)")
        ax.set_ylabel("ms")
        ax.set_title(f"D={D}, H={WIDTH // D}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[-1]
    Bs = [d["B"] for d in dec]
    for name, color in (("ours", "C0"), ("fla", "C1"), ("torch", "C3")):
        if all(f"{name}_us" in d for d in dec):
            ax.plot(Bs, [d[f"{name}_us"] for d in dec], color=color, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("us per token")
    ax.set_title("decode, D=128, H=16")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    m = result["machine"]
    fig.suptitle(f"delta rule, bf16: {m.get('gpu', m.get('device', ''))}, torch {m['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
