"""Logic of the SMILETrainer module (MRML level, no qt)."""
from .logic import DatasetReport, TrainerLogic, TrainingSettings, scan_dataset
from .process import EventFollower, TrainingProcess

__all__ = ["DatasetReport", "EventFollower", "TrainerLogic", "TrainingProcess", "TrainingSettings", "scan_dataset"]
