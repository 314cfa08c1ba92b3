"""train-gsm: LoRA (or full) fine-tuning of Qwen2.5-VL with the Geometry Selection Module, via accelerate."""

from spatialctl.stages.train_gsm.config import TrainGSMConfig
from spatialctl.stages.train_gsm.loop import run

__all__ = ["TrainGSMConfig", "run"]
