"""Training: config, trainer, checkpoints, logs, and the distributed wrapping (`parallelize`)."""

from .config import TrainConfig, load_config
from .trainer import train

__all__ = ["TrainConfig", "load_config", "train"]
