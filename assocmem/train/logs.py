"""Training logs: a CSV file, TensorBoard event files, and a loss-curve PNG at the end."""

import csv
from pathlib import Path

FIELDS = ["step", "tokens", "loss", "val_loss", "val_ppl", "lr", "grad_norm", "tokens_per_s", "elapsed_s"]


class RunLog:
    def __init__(self, out_dir: Path, resume_step: int = 0):
        self.path = Path(out_dir) / "log.csv"
        rows = []
        if self.path.exists() and resume_step:
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            print("tensorboard is not installed: logging to log.csv only")

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow({k: row.get(k, "") for k in FIELDS})
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value not in ("", None):
                    self.tensorboard.add_scalar(f"train/{key}", value, row["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def plot_loss_curve(csv_path: Path, png_path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss-curve PNG")
        return None
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    train = [(int(r["step"]), float(r["loss"])) for r in rows if r["loss"]]
    val = [(int(r["step"]), float(r["val_loss"])) for r in rows if r["val_loss"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
