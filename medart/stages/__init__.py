"""Run logic, one module per stage. Each stage takes typed requests — a :class:`Target` (a loaded
model and the images it is measured on), :class:`RunOptions` (how it runs) and its own spec — and
logs one MLflow run (with child runs); none loads a model it was handed.
"""

from medart.models.loading import ModelSource
from medart.stages.target import DataSpec, RunOptions, Target, champion, from_options  # noqa: I001  (first: the others use it)
from medart.stages.train import ModelRequest, TrainOutcome, train
from medart.stages.attack import AttackOutcome, attack
from medart.stages.sweep import SweepOutcome, SweepRow, sweep
from medart.stages.evaluate import EvaluateOutcome, evaluate
from medart.stages.detect import DetectionOutcome, DetectRequest, detect
from medart.stages.pipeline import PipelineOutcome, pipeline

__all__ = ["AttackOutcome", "DataSpec", "DetectRequest", "DetectionOutcome", "EvaluateOutcome", "ModelRequest",
           "ModelSource", "PipelineOutcome", "RunOptions", "SweepOutcome", "SweepRow", "Target", "TrainOutcome", "attack", "champion",
           "detect", "evaluate", "from_options", "pipeline", "sweep", "train"]
