"""`assocmem bench hopfield`: Hopfield retrieval through SDPA against the materialised association matrix.

Both compute the retrieval inside the Hopfield layers: `steps` updates ξ ← X softmax(β Xᵀξ), the last
one reading out through the values, on projected patterns [B, L, H, d]. Ours is `ops.hopfield.retrieve`
(scaled_dot_product_attention: no [L, S] matrix is kept); the peer is `ops.hopfield.naive`, which builds
softmax(β ξXᵀ) explicitly as straightforward implementations (hopfield-layers) do. Forward+backward,
outputs and gradients checked against each other before timing.
"""

from pathlib import Path

import torch

from ..ops.hopfield import retrieve
from ..ops.hopfield.naive import naive_retrieve
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

COLUMNS = [
    ("L", "L = S", "d"),
    ("steps", "steps", "d"),
    ("ours_ms", "ours ms", ".2f"),
    ("naive_ms", "materialised ms", ".2f"),
    ("speedup", "speed-up", ".2f"),
    ("ours_peak_mb", "ours peak MB", ".1f"),
    ("naive_peak_mb", "materialised peak MB", ".1f"),
    ("memory_ratio", "memory ratio", ".3f"),
    ("note", "note", "s"),
]
IMPLEMENTATIONS = {"ours": retrieve, "naive": naive_retrieve}


def _inputs(B, L, H, d, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    return make(B, L, H, d), make(B, L, H, d), make(B, L, H, d)


def _make_call(name, inputs, beta, steps):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    fn = IMPLEMENTATIONS[name]

    def call():
        for x in leaves:
            x.grad = None
        out = fn(*leaves, beta=beta, steps=steps)
        out.backward(torch.ones_like(out))
        return [out.detach()] + [x.grad for x in leaves]

    return call


def memory_probe(name: str, B: int, L: int, H: int, d: int, steps: int, beta: float):
    """A forward+backward call on fresh inputs, for measuring peak memory in a child process."""
    return _make_call(name, _inputs(B, L, H, d, torch.float32, torch.device("cpu")), beta, steps)


def _naive_bytes(B, L, H, steps, itemsize):
    """What the materialised version keeps for backward: logits and probabilities per update, plus a gradient."""
    return 3 * steps * B * H * L * L * itemsize


def run(
    Ls=(1024, 4096, 16384),
    steps_list=(1, 3),
    heads: int = 4,
    head_size: int = 64,
    batch: int = 1,
    device: str = "cpu",
    out: Path | None = RESULTS_DIR / "hopfield_cpu.json",
    plot: bool = True,
    measure_memory: bool = True,
    naive_memory_limit_gb: float | None = None,
) -> dict:
    device = torch.device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if naive_memory_limit_gb is None:
        naive_memory_limit_gb = 100.0 if device.type == "cuda" else 8.0
    beta = head_size**-0.5
    rows = []
    for steps in steps_list:
        for L in Ls:
            inputs = _inputs(batch, L, heads, head_size, dtype, device)
            row = {"L": L, "S": L, "steps": steps, "H": heads, "d": head_size, "B": batch}
            outputs = {}
            names = ["ours"]
            needed = _naive_bytes(batch, L, heads, steps, inputs[0].element_size()) / 2**30
            if needed <= naive_memory_limit_gb:
                names.append("naive")
            else:
                row["note"] = f"materialised skipped: needs ~{needed:.0f} GB"
            for name in names:
                call = _make_call(name, inputs, beta, steps)
                outputs[name] = call()
                row[f"{name}_ms"] = time_call(call, device) * 1e3
                if not measure_memory:
                    continue
                if device.type == "cuda":
                    with CudaPeakMemory(device) as mem:
                        call()
                    row[f"{name}_peak_mb"] = mem.peak_bytes / 2**20
                else:
                    peak = cpu_peak_in_child(
                        "assocmem.bench.hopfield:memory_probe",
                        dict(name=name, B=batch, L=L, H=heads, d=head_size, steps=steps, beta=beta),
                    )
                    row[f"{name}_peak_mb"] = None if peak is None else peak / 2**20
            if "naive" in outputs:
                errors = [
                    ((a.double() - b.double()).norm() / b.double().norm()).item()
                    for a, b in zip(outputs["ours"], outputs["naive"])
                ]
                row["max_rel_err"] = max(errors)
                limit = 2e-2 if dtype == torch.bfloat16 else 1e-4
                if row["max_rel_err"] > limit:
                    raise RuntimeError(
                        f"retrieve disagrees with the materialised version at L={L}, steps={steps}: {errors}"
                    )
                row["speedup"] = row["naive_ms"] / row["ours_ms"]
                if row.get("naive_peak_mb") and row.get("ours_peak_mb") is not None:
                    row["memory_ratio"] = row["ours_peak_mb"] / row["naive_peak_mb"]
            rows.append(row)
            print(format_table([row], COLUMNS), flush=True)
            del inputs, outputs
            if device.type == "cuda":
                torch.cuda.empty_cache()

    result = {
        "benchmark": "hopfield",
        "machine": machine_info(device),
        "setup": {
            "batch": batch,
            "heads": heads,
            "head_size": head_size,
            "dtype": str(dtype).replace("torch.", ""),
            "pass": "forward+backward",
            "timing": "median; CUDA events after 3 warm-up calls on a GPU, wall time after one on the CPU",
            "memory": "peak added by one forward+backward (CUDA allocator, or resident set in a fresh CPU process)",
        },
        "rows": rows,
    }
    print()
    print(format_table(rows, COLUMNS))
    save_results(result, out, (lambda png: _plot(rows, png, result["machine"])) if plot else None)
    return result


def _plot(rows, path, machine):
    axes = time_memory_axes()
    if axes is None:
        return None
    plt, fig, ax_t, ax_m = axes
    for steps, style in zip(sorted({r["steps"] for r in rows}), ("-", "--", ":")):
        sel = sorted((r for r in rows if r["steps"] == steps), key=lambda r: r["L"])
        for name, label, marker in (("ours", "SDPA (ours)", "s"), ("naive", "materialised", "o")):
            pts = [(r["L"], r.get(f"{name}_ms"), r.get(f"{name}_peak_mb")) for r in sel if r.get(f"{name}_ms")]
            label = f"{label}, {steps} step(s)"
            if pts:
                ax_t.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker, label=label)
            mem = [p for p in pts if p[2] is not None]
            if mem:
                ax_m.plot([p[0] for p in mem], [p[2] for p in mem], style, marker=marker, label=label)
    return save_time_memory_plot(
        plt,
        fig,
        ax_t,
        ax_m,
        xlabel="L = S (patterns)",
        title="Hopfield retrieval",
        time_title="forward+backward time",
        suptitle=f"{machine.get('gpu', machine['cpu'])}, torch {machine['torch']}",
        path=path,
        legend_on_memory=True,
    )
