"""The Hopfield benchmark verifies both implementations agree, skips what would not fit, and writes JSON."""

import json

import pytest

from assocmem.bench import hopfield as bench
from assocmem.cli import main


def test_run_writes_verified_rows(tmp_path):
    out = tmp_path / "h.json"
    result = bench.run(
        Ls=(64, 128), steps_list=(1, 2), heads=2, head_size=16, out=out, plot=False, measure_memory=False
    )
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and len(saved["rows"]) == 4
    for row in saved["rows"]:
        assert row["max_rel_err"] < 1e-4
        assert row["speedup"] == pytest.approx(row["naive_ms"] / row["ours_ms"])


def test_materialised_version_is_skipped_when_too_large():
    result = bench.run(
        Ls=(128,),
        steps_list=(1,),
        heads=2,
        head_size=8,
        out=None,
        plot=False,
        measure_memory=False,
        naive_memory_limit_gb=1e-6,
    )
    row = result["rows"][0]
    assert "naive_ms" not in row and row["note"].startswith("materialised skipped")


def test_memory_of_sdpa_retrieval_is_below_the_materialised_one():
    result = bench.run(Ls=(1024,), steps_list=(1,), heads=2, head_size=16, out=None, plot=False)
    row = result["rows"][0]
    assert 0 < row["ours_peak_mb"] < row["naive_peak_mb"]


def test_refuses_to_time_wrong_outputs(monkeypatch):
    real = bench.IMPLEMENTATIONS["ours"]
    monkeypatch.setitem(bench.IMPLEMENTATIONS, "ours", lambda *a, **kw: real(*a, **kw) * 1.01)
    with pytest.raises(RuntimeError, match="disagrees with the materialised version"):
        bench.run(Ls=(64,), steps_list=(1,), heads=1, head_size=8, out=None, plot=False, measure_memory=False)


def test_cli(capsys):
    assert (
        main(
            [
                "bench",
                "hopfield",
                "--L",
                "64",
                "--steps",
                "1",
                "--heads",
                "1",
                "--head-size",
                "8",
                "--no-save",
                "--no-memory",
            ]
        )
        == 0
    )
    assert "materialised ms" in capsys.readouterr().out
