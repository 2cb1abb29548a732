"""`assocmem bench delta-rule`: the step-by-step specification against the chunk backend.

For every (T, D): inputs of batch `batch` and H = width / D heads; forward and forward+backward timed
(median wall time) and their peak memory measured. The chunk backend's outputs and gradients are
checked against the naive ones before any number is reported.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from ..ops.delta_rule import delta_rule
from .common import (
    RESULTS_DIR,
    CudaPeakMemory,
    cpu_peak_in_child,
    format_table,
    machine_info,
    save_results,
    save_time_memory_plot,
    time_call,
    time_memory_axes,
)

METHODS = ("naive", "chunk")
COLUMNS = [
    ("T", "T", "d"),
    ("D", "D", "d"),
    ("H", "H", "d"),
    ("pass", "pass", "s"),
    ("naive_ms", "naive ms", ".1f"),
    ("chunk_ms", "chunk ms", ".1f"),
    ("speedup", "chunk speed-up", ".1f"),
    ("naive_peak_mb", "naive peak MB", ".1f"),
    ("chunk_peak_mb", "chunk peak MB", ".1f"),
    ("chunk_mb_per_1k_tokens", "chunk MB/1K tok", ".2f"),
]


def _inputs(B, T, H, D, device):
    q = torch.randn(B, T, H, D, device=device)
    k = F.normalize(torch.randn(B, T, H, D, device=device), dim=-1)
    v = torch.randn(B, T, H, D, device=device)
    beta = torch.rand(B, T, H, device=device)
    return q, k, v, beta


def _rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _make_call(method, inputs, do, with_backward):
    leaves = [x.detach().clone().requires_grad_(with_backward) for x in inputs]

    def call():
        for x in leaves:
            x.grad = None
        o, _ = delta_rule(*leaves, backend=method)
        if with_backward:
            o.backward(do)
        return [o.detach()] + ([x.grad for x in leaves] if with_backward else [])

    return call


def memory_probe(method: str, B: int, T: int, H: int, D: int, with_backward: bool, device: str = "cpu"):
    """A call on fresh random inputs, for measuring peak memory in a child process."""
    inputs = _inputs(B, T, H, D, torch.device(device))
    do = torch.randn(B, T, H, D, device=device)
    return _make_call(method, inputs, do, with_backward)


def _measure(method, inputs, do, device, with_backward, measure_memory):
    """(seconds, peak bytes or None, outputs) of one configuration."""
    call = _make_call(method, inputs, do, with_backward)
    outputs = call()
    seconds = time_call(call, device)
    if not measure_memory:
        peak = None
    elif device.type == "cuda":
        with CudaPeakMemory(device) as mem:
            call()
        peak = mem.peak_bytes
    else:
        B, T, H, D = inputs[0].shape
        peak = cpu_peak_in_child(
            "assocmem.bench.delta_rule:memory_probe",
            dict(method=method, B=B, T=T, H=H, D=D, with_backward=with_backward),
        )
    return seconds, peak, outputs


def run(
    Ts=(512, 2048, 8192),
    Ds=(64, 128),
    width: int = 512,
    batch: int = 1,
    device: str = "cpu",
    out: Path | None = RESULTS_DIR / "delta_rule_cpu.json",
    plot: bool = True,
    tolerance: float = 1e-5,
    measure_memory: bool = True,
) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    rows = []
    for D in Ds:
        H = max(1, width // D)
        for T in Ts:
            inputs = _inputs(batch, T, H, D, device)
            do = torch.randn(batch, T, H, D, device=device)
            for with_backward in (False, True):
                row = {"T": T, "D": D, "H": H, "B": batch, "pass": "fwd+bwd" if with_backward else "fwd"}
                results = {}
                for method in METHODS:
                    seconds, peak, outputs = _measure(method, inputs, do, device, with_backward, measure_memory)
                    row[f"{method}_ms"] = seconds * 1e3
                    row[f"{method}_peak_mb"] = None if peak is None else peak / 2**20
                    results[method] = outputs
                errors = [_rel_err(a, b) for a, b in zip(results["chunk"], results["naive"])]
                row["max_rel_err"] = max(errors)
                if row["max_rel_err"] > tolerance:
                    raise RuntimeError(
                        f"chunk backend disagrees with naive.py at T={T}, D={D}, {row['pass']}: "
                        f"relative errors {errors} > {tolerance}; refusing to report timings"
                    )
                row["speedup"] = row["naive_ms"] / row["chunk_ms"]
                if row["chunk_peak_mb"] is not None:
                    row["chunk_mb_per_1k_tokens"] = row["chunk_peak_mb"] / (batch * T / 1000)
                rows.append(row)
                print(
                    format_table([row], COLUMNS).splitlines()[-1] if len(rows) > 1 else format_table([row], COLUMNS),
                    flush=True,
                )

    result = {
        "benchmark": "delta_rule",
        "machine": machine_info(device),
        "setup": {
            "batch": batch,
            "width": width,
            "dtype": "float32",
            "chunk_size": 64,
            "timing": "median; CUDA events after 3 warm-up calls on a GPU, wall time after one on the CPU",
            "memory": (
                "peak added by one call after a warm-up: CUDA allocator statistics, or on the CPU the resident-set "
                "high-water mark of the second call in a fresh process, freed heap trimmed after the first"
            ),
            "verified": f"chunk outputs and gradients within relative error {tolerance} of naive.py",
        },
        "rows": rows,
        "summary": _summary(rows),
    }
    print()
    print(format_table(rows, COLUMNS))
    for line in result["summary"]["lines"]:
        print(line)
    save_results(result, out, (lambda png: _plot(rows, png, result["machine"])) if plot else None)
    return result


def _summary(rows):
    lines, summary = [], {}
    for D in sorted({r["D"] for r in rows}):
        fwd = {r["T"]: r for r in rows if r["D"] == D and r["pass"] == "fwd"}
        bwd = {r["T"]: r for r in rows if r["D"] == D and r["pass"] == "fwd+bwd"}
        Ts = sorted(fwd)
        for T in Ts:
            lines.append(f"D={D} T={T}: chunk forward {fwd[T]['speedup']:.1f}x the naive loop")
        if len(Ts) >= 2 and bwd[Ts[0]].get("chunk_peak_mb") and bwd[Ts[-1]].get("chunk_peak_mb"):
            growth = bwd[Ts[-1]]["chunk_peak_mb"] / bwd[Ts[0]]["chunk_peak_mb"]
            summary[f"D{D}_fwd_bwd_peak_growth"] = growth
            lines.append(
                f"D={D}: chunk forward+backward peak memory grows {growth:.1f}x from T={Ts[0]} to T={Ts[-1]} "
                f"({Ts[-1] / Ts[0]:.0f}x the tokens)"
            )
    summary["lines"] = lines
    return summary


def _plot(rows, path: Path, machine: dict):
    axes = time_memory_axes()
    if axes is None:
        return None
    plt, fig, ax_t, ax_m = axes
    for D in sorted({r["D"] for r in rows}):
        for pass_, style in (("fwd", "-"), ("fwd+bwd", "--")):
            sel = sorted((r for r in rows if r["D"] == D and r["pass"] == pass_), key=lambda r: r["T"])
            Ts = [r["T"] for r in sel]
            for method, marker in (("naive", "o"), ("chunk", "s")):
                label = f"{method} D={D} {pass_}"
                ax_t.plot(Ts, [r[f"{method}_ms"] for r in sel], style, marker=marker, label=label)
                if all(r.get(f"{method}_peak_mb") is not None for r in sel):
                    ax_m.plot(Ts, [r[f"{method}_peak_mb"] for r in sel], style, marker=marker, label=label)
    return save_time_memory_plot(
        plt,
        fig,
        ax_t,
        ax_m,
        xlabel="sequence length T",
        title="delta rule",
        time_title="time",
        suptitle=f"{machine['cpu']} ({machine['torch_threads']} threads), torch {machine['torch']}",
        path=path,
        legend_on_memory=False,
    )
