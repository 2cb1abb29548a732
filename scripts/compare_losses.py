"""Compare the loss curves of two runs (log.csv files) step by step; print and save the differences."""

import argparse
import csv
import json
from pathlib import Path


def read(path):
    with open(path, newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r["loss"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("reference")
    parser.add_argument("other")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    a, b = read(args.reference), read(args.other)
    steps = sorted(set(a) & set(b))
    rows = [{"step": s, "reference": a[s], "other": b[s], "rel_diff": abs(a[s] - b[s]) / abs(a[s])} for s in steps]
    for r in rows:
        print(f"step {r['step']:4d}  {r['reference']:.6f}  {r['other']:.6f}  rel diff {r['rel_diff']:.2e}")
    worst = max((r["rel_diff"] for r in rows), default=None)
    print(f"{len(rows)} common steps; largest relative difference {worst}")
    if args.out:
        args.out.write_text(json.dumps({"reference": args.reference, "other": args.other, "rows": rows,
                                        "max_rel_diff": worst}, indent=2))


if __name__ == "__main__":
    main()
