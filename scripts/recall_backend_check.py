"""Train the same small MQAR DeltaNet twice under bf16 autocast, once through the PyTorch chunk path and
once through our Triton kernels (on a machine without a GPU: under the Triton interpreter, with the tests'
bf16 matmul fix), and print both loss curves: a training-level check that the kernels' gradients behave
like the reference's. Usage: python scripts/recall_backend_check.py [STEPS]  (~1 min per step on a CPU)."""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "0" if __import__("torch").cuda.is_available() else "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from assocmem.data.mqar import mqar  # noqa: E402
from assocmem.experiments.recall import RecallSetup, _answer_loss, _lr_at, model_config  # noqa: E402
from assocmem.models import AssocMemForCausalLM  # noqa: E402


def main(steps: int = 25) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        from ops.test_delta_rule_triton import _teach_the_interpreter_bfloat16

        _teach_the_interpreter_bfloat16()
    setup = RecallSetup(vocab_size=256, seq_len=64, num_kv_pairs=8, batch=32, steps=steps)
    for backend in ("chunk", "triton"):
        config = model_config("deltanet", 128, setup)
        config.delta_rule_backend = backend  # "triton" is not a config choice; set directly for this check
        torch.manual_seed(0)
        model = AssocMemForCausalLM(config).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
        losses, start = [], time.time()
        for step in range(steps):
            batch = mqar(32, vocab_size=256, seq_len=64, num_kv_pairs=8, seed=step)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step / steps, 3e-3)
            with torch.autocast(device, dtype=torch.bfloat16):
                loss, _, _ = _answer_loss(model, batch.inputs.to(device), batch.labels.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(round(loss.item(), 4))
        print(backend, f"{time.time() - start:.0f}s", losses, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
