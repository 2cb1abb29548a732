"""The CPU benchmark runs, verifies before it reports, and writes what it printed."""

import json

import pytest
import torch

from assocmem.bench import delta_rule as bench
from assocmem.bench.common import cpu_peak_in_child, format_table
from assocmem.cli import main


def test_run_writes_verified_rows(tmp_path):
    out = tmp_path / "dr.json"
    result = bench.run(Ts=(32, 96), Ds=(16,), width=32, out=out, plot=False, measure_memory=False)
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"]
    assert len(saved["rows"]) == 4
    for row in saved["rows"]:
        assert row["H"] == 2 and row["max_rel_err"] < 1e-5
        assert row["naive_ms"] > 0 and row["chunk_ms"] > 0
        assert row["speedup"] == pytest.approx(row["naive_ms"] / row["chunk_ms"])
    assert saved["machine"]["torch"] == torch.__version__


def test_refuses_to_time_wrong_outputs(monkeypatch, tmp_path):
    real = bench.delta_rule

    def broken(*args, backend, **kw):
        o, s = real(*args, backend=backend, **kw)
        return (o * 1.01 if backend == "chunk" else o), s

    monkeypatch.setattr(bench, "delta_rule", broken)
    with pytest.raises(RuntimeError, match="disagrees with naive.py"):
        bench.run(Ts=(32,), Ds=(16,), width=16, out=tmp_path / "x.json", plot=False, measure_memory=False)
    assert not (tmp_path / "x.json").exists()


def test_memory_is_measured_per_row(tmp_path):
    result = bench.run(Ts=(256,), Ds=(32,), width=64, out=None, plot=False)
    fwd, fwd_bwd = result["rows"]
    assert fwd["chunk_peak_mb"] > 0
    assert fwd_bwd["naive_peak_mb"] > 0 and fwd_bwd["chunk_peak_mb"] > 0


def test_child_peak_memory_grows_with_the_work():
    small = cpu_peak_in_child(
        "assocmem.bench.delta_rule:memory_probe", dict(method="chunk", B=1, T=256, H=2, D=32, with_backward=True)
    )
    large = cpu_peak_in_child(
        "assocmem.bench.delta_rule:memory_probe", dict(method="chunk", B=1, T=2048, H=2, D=32, with_backward=True)
    )
    assert small is not None and large is not None
    assert 4 * small < large < 16 * small


def test_format_table_aligns_and_marks_missing():
    table = format_table([{"a": 1.5, "b": None}], [("a", "A", ".2f"), ("b", "Bee", "d")])
    assert table.splitlines() == ["   A  Bee", "----  ---", "1.50    -"]


def test_cli_prints_the_table(capsys):
    assert main(["bench", "delta-rule", "--T", "32", "--D", "16", "--width", "16", "--no-save", "--no-memory"]) == 0
    printed = capsys.readouterr().out
    assert "chunk speed-up" in printed and "D=16 T=32" in printed


def test_cli_rejects_unknown_benchmark(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "nothing"])
    assert "invalid choice" in capsys.readouterr().err


def test_interleaved_decode_timing_alternates_and_summarises_per_round():
    """The decode timing runs the callables in turn each round, so a drifting host reaches all alike; the
    ratio is taken per round (its median and range), not between medians."""
    from assocmem.bench.delta_rule_gpu import interleaved_times, ratio_summary

    order = []
    clock = iter([10.0, 12.0, 20.0, 26.0, 11.0, 11.0])  # the host slows down in round 2
    times = interleaved_times({"ours": lambda: order.append("ours"), "fla": lambda: order.append("fla")},
                              lambda fn: (fn(), next(clock))[1], rounds=3)  # fmt: skip
    assert order == ["ours", "fla"] * 3
    assert times == {"ours": [10.0, 20.0, 11.0], "fla": [12.0, 26.0, 11.0]}
    summary = ratio_summary(times, "fla", "ours")
    assert summary["ratio"] == pytest.approx(1.2) and summary["ratio_min"] == pytest.approx(1.0)
    assert summary["ratio_max"] == pytest.approx(1.3)
    with pytest.raises(ValueError, match="rounds"):
        interleaved_times({"ours": lambda: None}, lambda fn: 1.0, rounds=0)
