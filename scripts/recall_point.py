"""One MQAR point on the CPU, with its loss curve: mixer, width, lr, sequence length, pairs, steps, and
whether the filler tokens are random (1) or token 0 (0). Vocabulary 512, batch 32, 200 test sequences,
training batches cycling through 4 / 8 / ... pairs up to the test's number, one thread (two points can run
side by side on two cores). Prints the result as JSON, then the loss curve.
Usage: python scripts/recall_point.py deltanet 128 1e-3 256 32 700 0"""

import json
import sys

import torch

from assocmem.experiments.recall import RecallSetup, train_one

torch.set_num_threads(1)
m, w, lr, T, P = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
steps = int(sys.argv[6])
s = RecallSetup(random_fillers=bool(int(sys.argv[7])) if len(sys.argv) > 7 else False, vocab_size=512, seq_len=T,
                num_kv_pairs=P, batch=32, steps=steps, test_examples=200,
                train_kv_pairs=tuple(p for p in (4, 8, 16, 32, 64) if p <= P))  # fmt: skip
r = train_one(m, w, lr, s)
print(json.dumps({k: r[k] for k in ("mixer", "width", "lr", "accuracy", "steps_done", "train_seconds")}))
print(r["loss_curve"])
