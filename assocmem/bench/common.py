"""What every benchmark needs: the machine it ran on, a timer, a peak-memory meter, a table, a JSON file."""

import ctypes
import datetime
import gc
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS_DIR = Path("benchmarks/results")


def machine_info(device: torch.device) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, *, budget_s: float = 1.0, max_reps: int = 7) -> float:
    """Median time of fn() in seconds after warm-up.

    On a GPU each call is timed with CUDA events (three warm-up calls, up to 25 timed ones within the
    budget); on the CPU with perf_counter (one warm-up, up to `max_reps`; a call slower than the
    budget runs once more).
    """
    if device.type == "cuda":
        return _time_cuda(fn, device, budget_s=budget_s)
    start = time.perf_counter()
    fn()
    times = []
    if time.perf_counter() - start > budget_s:
        max_reps = 1
    while len(times) < max_reps and (not times or sum(times) < budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _time_cuda(fn, device: torch.device, *, budget_s: float, warmup: int = 3, max_reps: int = 25) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    times: list[float] = []
    while len(times) < max_reps and sum(times) < budget_s:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


class CudaPeakMemory:
    """Peak CUDA memory a block adds, in bytes, from the caching allocator's statistics."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None

    def __enter__(self):
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc):
        torch.cuda.synchronize(self.device)
        self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        return False


def cpu_peak_in_child(target: str, kwargs: dict) -> int | None:
    """Peak resident memory that one call adds on the CPU, measured in a fresh Python process.

    `target` is "module:function"; the function takes **kwargs and returns a callable (inputs already
    built). The child calls it once to warm up, hands the freed heap back to the kernel (malloc_trim),
    resets the kernel's high-water mark (/proc/self/clear_refs), calls it again and reports
    VmHWM - VmRSS: the most memory the second call had resident at once. Linux only: elsewhere None.
    """
    if not Path("/proc/self/clear_refs").exists():
        return None
    code = (
        "import json, sys\n"
        "from assocmem.bench.common import _child_peak\n"
        "print('PEAK', _child_peak(sys.argv[1], json.loads(sys.argv[2])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, target, json.dumps(kwargs)], capture_output=True, text=True, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("PEAK "):
            return int(line.split()[1])
    raise RuntimeError(f"memory probe {target}({kwargs}) failed:\n{proc.stderr[-2000:]}")


def _child_peak(target: str, kwargs: dict) -> int:
    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)(**kwargs)
    fn()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    base = _proc_status_kib("VmRSS")
    fn()
    return max(0, _proc_status_kib("VmHWM") - base) * 1024


def _proc_status_kib(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1))


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); missing values print as '-'."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([("-" if row.get(key) is None else format(row[key], spec)) for key, _, spec in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> Path:
    """Write atomically: a temporary file beside the target, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path


def save_results(result: dict, out: Path | None, plot=None) -> None:
    """Write the result JSON (atomically) and, given plot(png_path) -> path or None, its PNG beside it."""
    if out is None:
        return
    out = Path(out)
    write_json(out, result)
    print(f"wrote {out}")
    if plot is not None:
        png = plot(out.with_suffix(".png"))
        if png:
            print(f"wrote {png}")


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or None (with a note) where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    return plt


def time_memory_axes():
    """(pyplot, figure, time axes, memory axes) for a two-panel benchmark plot, or None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    return plt, fig, ax_t, ax_m


def save_time_memory_plot(plt, fig, ax_t, ax_m, *, xlabel, title, time_title, suptitle, path, legend_on_memory):
    """Log-log axes, titles, legends; writes the PNG and closes the figure."""
    for ax, what, ylabel in ((ax_t, time_title, "ms"), (ax_m, "peak memory", "MB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {what}")
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    if legend_on_memory:
        ax_m.legend(fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
