"""The evaluation stage: clean (and robust) accuracy and AUC of a model on the test split."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import mlflow

from medart import tracking
from medart.attacks import make_spec
from medart.models import registry
from medart.models.evaluation import classification_metrics, predict
from medart.models.sanity import ModelCheck
from medart.stages.attack import attack
from medart.stages.guard import guard
from medart.stages.target import RunOptions, Target


@dataclass(frozen=True)
class RobustRow:
    """One attack at one ε on the evaluated images (fractions)."""

    attack: str
    eps: float
    adv_acc: float
    adv_auc: float
    success_rate: float
    run_id: str
    adv_balanced_acc: float = float("nan")


@dataclass
class EvaluateOutcome:
    run_id: str
    clean: dict[str, float]  # acc, auc, loss, balanced_acc, recall_<class> (fractions; loss in nats), n
    robust: list[RobustRow]
    check: ModelCheck | None = None  # the degenerate-model guard on the attacked images

    def metrics(self) -> dict[str, float]:
        """Flat metric names as logged: ``test_acc``, ``test_balanced_acc`` …,
        ``adv_acc.<attack>.eps<k>`` (ε = k/255), ``adv_balanced_acc.<attack>.eps<k>`` …"""
        out = {f"test_{k}": v for k, v in self.clean.items()}
        for row in self.robust:
            label = f"{row.attack}.eps{row.eps * 255:.3g}"
            out |= {f"adv_acc.{label}": row.adv_acc, f"adv_auc.{label}": row.adv_auc,
                    f"success_rate.{label}": row.success_rate, f"adv_balanced_acc.{label}": row.adv_balanced_acc}
        return out


def evaluate(target: Target, attacks: Sequence[str] = (), eps_values: Sequence[float] = (1 / 255,),
             max_eval: int | None = None, run: RunOptions = RunOptions()) -> EvaluateOutcome:
    """Test-split metrics of ``target.model``, logged as a run in ``medart/<dataset>/evaluate``.

    Clean ``acc``, ``auc``, ``loss``, ``n`` on the test split (``max_eval`` images per part at
    most); with ``attacks``, each attack at each ε (paper settings) on ``target``'s attacked images
    as a child attack run, the evaluation run then carrying the degenerate-model guard's tag and
    metrics. For a ``models:/`` URI the metrics are also linked to the registered version's logged
    model.
    """
    specs = [make_spec(name, eps) for name in attacks for eps in eps_values]
    test = target.test_set(max_eval)
    with tracking.start_run(tracking.experiment_name(target.dataset, "evaluate"), f"evaluate-{target.side}px",
                            run.parent_run_id) as mlflow_run:
        mlflow.log_params({"model_uri": target.model_uri, "dataset": target.dataset, "max_eval": max_eval,
                           "seed": target.seed, "n_test": len(test), "attacks": ",".join(attacks),
                           "eps": ",".join(f"{e:.6g}" for e in eps_values), "backend": run.backend})
        check = guard(target, run) if specs else None  # only attacks need the attacked images checked
        probs, labels = predict(model=target.model, dataset=test)
        clean = classification_metrics(probs, labels, target.splits.classes) | {"n": float(len(labels))}
        robust = []
        for spec in specs:
            out = attack(target, spec, dataclasses.replace(run, parent_run_id=None))
            robust.append(RobustRow(spec.name, spec.eps, out.metrics["adv_acc"], out.metrics["adv_auc"],
                                    out.metrics["success_rate"], out.run_id, out.metrics["adv_balanced_acc"]))
        outcome = EvaluateOutcome(mlflow_run.info.run_id, clean, robust, check)
        model_id = registry.logged_model_id(target.model_uri)
        mlflow.log_metrics(outcome.metrics(), model_id=model_id)  # on the run, and on the model when there is one
        if model_id:
            mlflow.set_tag("medart.logged_model_id", model_id)
    return outcome
