"""The paper's pipeline: train (or reuse a model), attack, detect — one parent run, a child run per stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mlflow

from medart import tracking
from medart.budget import eps_params
from medart.errors import MedartError
from medart.intervals import Estimate, interval_metrics
from medart.models.loading import ModelSource
from medart.models.training import TrainConfig
from medart.render.detection import summary_table
from medart.render.notes import note
from medart.stages.detect import DetectionOutcome, DetectRequest, detect, pair_counts
from medart.stages.guard import guard
from medart.stages.target import DataSpec, RunOptions, Target, champion
from medart.stages.train import ModelRequest, train


#: the attack run's numbers the pipeline's parent run carries (prefixed by the attack when there are several)
HEADLINE = ("clean_acc", "clean_auc", "adv_acc", "adv_auc", "success_rate", "clean_balanced_acc", "adv_balanced_acc")


@dataclass
class PipelineOutcome:
    run_id: str
    model_uri: str
    trained: bool  # False when an existing model was used
    detection: DetectionOutcome
    attack_metrics: dict[str, dict[str, float]]  # attack → its run's metrics
    summary: str  # Markdown: per attack, accuracy, balanced accuracy and detection AUC (%)


def pipeline(data: DataSpec, detection: DetectRequest, model_uri: "str | ModelSource | None" = None,
             model: ModelRequest = ModelRequest(), config: TrainConfig | None = None, max_examples: int | None = None,
             reference_size: int = 1000, run: RunOptions = RunOptions()) -> PipelineOutcome:
    """Use ``model_uri`` (a URI, or a :class:`ModelSource` for a network that is not medart's own),
    else the dataset's registered champion, else train one with ``model`` and
    ``config``; then attack and detect as :func:`medart.stages.detect.detect` does, all under one
    parent run in ``medart/<dataset>/main``, which gets the headline metrics (prefixed by the
    attack when there are several; each with its 95 % interval and n, as are the detection AUCs), the
    degenerate-model guard's tag and metrics, ``summary.md`` (also its description, with the n) and
    the detection tables and figures."""
    attacks = detection.attacks
    label = f"main-{'+'.join(attacks)}-eps{detection.eps}-{run.backend}"
    with tracking.start_run(tracking.experiment_name(data.dataset, "main"), label, run.parent_run_id) as parent:
        source = model_uri if isinstance(model_uri, ModelSource) else ModelSource(model_uri)
        trained, model_uri = False, source.model_uri or champion(data.dataset)
        if model_uri is None:
            outcome = train(data, model, config, dataclasses.replace(run, parent_run_id=None))
            model_uri, trained = outcome.model_uri, True
            model = outcome.model.cpu()
            if source.defence:  # the model just trained, behind the defence a loaded one would get
                from medart.models.defended import DefendedClassifier

                model = DefendedClassifier(model, source.defence, data.side()).eval()
            target = Target(model_uri, model, data, data.load(outcome.model.config.get("image_size")),
                            max_examples, reference_size)
        else:
            target = Target.load(dataclasses.replace(source, model_uri=model_uri), data, max_examples, reference_size)
        mlflow.set_tag("medart.model_uri", model_uri)
        mlflow.log_params({"model_uri": model_uri, "dataset": data.dataset, "attacks": ",".join(attacks)}
                          | eps_params("eps", detection.eps) | {"backend": run.backend})
        check = guard(target, run)
        out = detect(target, dataclasses.replace(detection, transfer=len(attacks) > 1), run)
        client, metrics = mlflow.MlflowClient(), {}
        for name, attack_run in out.attack_runs.items():
            m = client.get_run(attack_run).data.metrics
            metrics[name] = m
            prefix = f"{name}." if len(attacks) > 1 else ""
            headline = {k: Estimate.read(m, k) for k in HEADLINE}
            mlflow.log_metrics({f"{prefix}{k}": m[k] for k in HEADLINE} | interval_metrics({f"{prefix}{k}": e for k, e in headline.items()}))
            mlflow.log_metrics({f"{prefix}auc_{d}": v for d, v in out.auc[name].items()}
                               | interval_metrics({f"{prefix}auc_{d}": e for d, e in out.intervals[name].items()}))
        summary = summary_table(metrics, out.intervals, detection.detectors, check)
        mlflow.log_text(summary, "summary.md")
        _copy_artifacts(out.run_id)
        n = int(next(iter(metrics.values()))["n"])
        tracking.describe(note(f"{model_uri}{' (trained here)' if trained else ''} at ε = {detection.eps}, "
                               f"{run.backend}: {n} images attacked (AdvTrain + AdvTest); detection pairs "
                               f"(AdvTrain/AdvTest) {pair_counts(out.counts)}", summary))
    return PipelineOutcome(parent.info.run_id, model_uri, trained, out, metrics, summary)


def _copy_artifacts(run_id: str) -> None:
    """The detection run's tables and figures, attached to the active (parent) run as well, so its
    artifact tab shows the results without opening a child."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=folder)
        except mlflow.exceptions.MlflowException as exc:
            raise MedartError(f"could not read the detection run's artifacts ({exc})") from None
        mlflow.log_artifacts(path)
