"""The training domain: what a run is (`TrainingSpec`), what it emits, and how it can fail.

This surface is torch-free so the server starts fast; the loop itself is `trainer.loop.run_training`
(imports torch), loaded only when a run starts.
"""

from trainer.errors import DatasetError, SpecError, TrainerError
from trainer.preflight import TrainerOptions, check_spec
from trainer.records import (
    EPOCH_FIELDS,
    EpochRecord,
    MetricSink,
    RunOutcome,
    RunResult,
    StepRecord,
)
from trainer.spec import (
    SYNTHETIC_DATASETS,
    CsvDataset,
    DatasetSpec,
    EarlyStoppingSpec,
    FactoryDataset,
    ModelSpec,
    ScheduleSpec,
    SyntheticDataset,
    TrainingSpec,
)

__all__ = [
    "EPOCH_FIELDS",
    "SYNTHETIC_DATASETS",
    "CsvDataset",
    "DatasetError",
    "DatasetSpec",
    "EarlyStoppingSpec",
    "EpochRecord",
    "FactoryDataset",
    "MetricSink",
    "ModelSpec",
    "RunOutcome",
    "RunResult",
    "ScheduleSpec",
    "SpecError",
    "StepRecord",
    "SyntheticDataset",
    "TrainerError",
    "TrainerOptions",
    "TrainingSpec",
    "check_spec",
]
