"""Where the workspace's read-only data lives: `../shared/data/NAME` beside the repository."""

from pathlib import Path


def shared_data_dir(name: str) -> Path:
    """`../shared/data/NAME` seen from the working directory, else from the repository root (the first
    that exists; the former when neither does, so that error messages name the expected place)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root.parent / "shared" / "data" / name
        if candidate.is_dir():
            return candidate
    return Path("../shared/data") / name
