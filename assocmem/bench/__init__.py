"""Speed and memory benchmarks: each verifies its outputs, prints a table and writes JSON (and a PNG)."""
