"""The evaluation stage: clean (and robust) accuracy and AUC of a model on the test split, and
the evaluation checklist (:mod:`medart.attacks.checklist`) on its attacked images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import mlflow
import torch
from torch.utils.data import TensorDataset

from medart import tracking
from medart.attacks import make_spec
from medart.attacks.checklist import CheckResult, ChecklistPlan, run_checklist, vanishing_share
from medart.attacks.specs import check_backend
from medart.budget import Eps, eps_params
from medart.intervals import Estimate, interval_metrics
from medart.models.defended import attack_spec
from medart.models import registry
from medart.models.evaluation import classification_intervals, classification_metrics, predict
from medart.models.sanity import ModelCheck
from medart.render.notes import note
from medart.render.tables import metric_columns
from medart.stages.attack import attack
from medart.stages.guard import guard
from medart.stages.target import RunOptions, Target


#: The attack run's numbers an evaluation shows per attack and ε, each with its interval.
ROBUST = ("adv_acc", "adv_auc", "success_rate", "adv_balanced_acc")


@dataclass(frozen=True)
class RobustRow:
    """One attack at one ε on the evaluated images (fractions). ``through``: for a defended
    model, how the attack went through the defence (:attr:`AttackSpec.defence_tag`: ``bpda``,
    ``bpda-eot8``, ``plain``). ``intervals``: each of :data:`ROBUST` as an
    :class:`~medart.intervals.Estimate` (95 % interval and n)."""

    attack: str
    eps: Eps
    adv_acc: float
    adv_auc: float
    success_rate: float
    run_id: str
    adv_balanced_acc: float = float("nan")
    through: str = ""
    intervals: dict[str, Estimate] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``pgd.eps2``, ``pgd-bpda.eps2``: the row's part of its metric names."""
        return f"{self.attack}{'-' + self.through if self.through else ''}.eps{self.eps * 255:.3g}"


@dataclass
class EvaluateOutcome:
    run_id: str
    clean: dict[str, float]  # acc, auc, loss, balanced_acc, recall_<class> (fractions; loss in nats), n, and <m>_ci_low/_ci_high/_n
    robust: list[RobustRow]
    check: ModelCheck | None = None  # the degenerate-model guard on the attacked images
    checks: list[CheckResult] = field(default_factory=list)  # the checklist, when asked for

    def metrics(self) -> dict[str, float]:
        """Flat metric names as logged: ``test_acc``, ``test_balanced_acc`` …,
        ``adv_acc.<attack>.eps<k>`` (ε = k/255), ``adv_balanced_acc.<attack>.eps<k>`` …,
        each fraction with its ``_ci_low``, ``_ci_high`` and ``_n``;
        ``checks_failed`` with the checklist; for a defended model ``masking_gap.<attack>.eps<k>``,
        the plain attack's accuracy less the BPDA/EOT attack's (> 0: the defence holds only
        against the plain attack)."""
        out = {f"test_{k}": v for k, v in self.clean.items()}
        if self.checks:
            out["checks_failed"] = float(sum(not c.passed for c in self.checks))
        for row in self.robust:
            label = row.label
            out |= {f"adv_acc.{label}": row.adv_acc, f"adv_auc.{label}": row.adv_auc,
                    f"success_rate.{label}": row.success_rate, f"adv_balanced_acc.{label}": row.adv_balanced_acc}
            out |= interval_metrics({f"{name}.{label}": e for name, e in row.intervals.items()})
        plain = {(row.attack, row.eps): row.adv_acc for row in self.robust if row.through == "plain"}
        for row in self.robust:
            if row.through.startswith("bpda") and (row.attack, row.eps) in plain:
                out[f"masking_gap.{row.attack}.eps{row.eps * 255:.3g}"] = plain[row.attack, row.eps] - row.adv_acc
        return out


def evaluate(target: Target, attacks: Sequence[str] = (), eps_values: Sequence[Eps | float] = (Eps(1 / 255),),
             run: RunOptions = RunOptions(), checks: ChecklistPlan | None = None) -> EvaluateOutcome:
    """Test-split metrics of ``target.model``, logged as a run in ``medart/<dataset>/evaluate``.

    Clean ``acc``, ``auc``, ``loss``, ``n`` (each fraction with its 95 % interval and n:
    :func:`~medart.models.evaluation.classification_intervals`) on ``target``'s images (AdvTrain + AdvTest: the whole
    test split, or the stratified ``target.max_examples`` of it); with ``attacks``, each attack at
    each ε of ``eps_values`` ([0, 1] pixels; paper settings) on the same images as a child attack
    run, so that clean and robust numbers always share their n, the evaluation run then carrying
    the degenerate-model guard's tag and metrics. With ``checks``, the evaluation checklist on the same images, its attacks as attack
    runs (cached like any), logged as the table ``checklist.json`` and the metric
    ``checks_failed``. For a ``models:/`` URI the metrics are also linked to the registered
    version's logged model. For a model behind a preprocessing defence each attack runs twice,
    through it (BPDA, with EOT for a randomized defence) and plain, rows ``<attack>-bpda…`` and
    ``<attack>-plain``; the checklist's attacks go through it and it gains the check that the
    defence holds against them as well as against plain PGD. The run's description is the table
    of its metrics.
    """
    eps_values = Eps.many(eps_values)
    specs = [make_spec(name, eps) for name in attacks for eps in eps_values]
    for name in dict.fromkeys(attacks):
        check_backend(name, run.backend)
    defence = getattr(target.model, "config", {}).get("defence")
    if defence:  # each attack through the defence (BPDA, EOT) and, beside it, plain: their gap is the masking
        specs = [variant for spec in specs
                 for variant in (attack_spec(spec, target.model), dataclasses.replace(spec, defence_gradient="plain"))]
    images = TensorDataset(*(torch.cat(t) for t in zip(*target.clean.values())))
    with tracking.start_run(tracking.experiment_name(target.dataset, "evaluate"), f"evaluate-{target.side}px",
                            run.parent_run_id) as mlflow_run:
        mlflow.set_tags(target.tags)  # the version an alias named, for later comparisons
        mlflow.log_params({"model_uri": target.model_uri, "dataset": target.dataset, "max_eval": target.max_examples,
                           "seed": target.seed, "n_test": len(images), "attacks": ",".join(attacks)}
                          | eps_params("eps", eps_values) | {"backend": run.backend} | ({"defence": defence} if defence else {}))
        check = guard(target, run) if specs else None  # only attacks need the attacked images checked
        probs, labels = predict(target.model, images, run.batch_size, run.device)
        clean = classification_metrics(probs, labels, target.splits.classes) | {"n": float(len(labels))}
        clean |= interval_metrics(classification_intervals(probs, labels, target.splits.classes))
        robust = []
        for spec in specs:
            out = attack(target, spec, dataclasses.replace(run, parent_run_id=None))
            robust.append(RobustRow(spec.name, spec.eps, out.metrics["adv_acc"], out.metrics["adv_auc"],
                                    out.metrics["success_rate"], out.run_id, out.metrics["adv_balanced_acc"], spec.defence_tag,
                                    {name: Estimate.read(out.metrics, name) for name in ROBUST}))
        outcome = EvaluateOutcome(mlflow_run.info.run_id, clean, robust, check)
        if checks is not None:
            outcome.checks = checklist(target, dataclasses.replace(checks, plain=bool(defence)), run)
            mlflow.log_table({f.name: [getattr(c, f.name) for c in outcome.checks] for f in dataclasses.fields(CheckResult)},
                             "checklist.json")
        model_id = registry.logged_model_id(target.model_uri)
        mlflow.log_metrics(outcome.metrics(), model_id=model_id)  # on the run, and on the model when there is one
        if model_id:
            mlflow.set_tag("medart.logged_model_id", model_id)
        tracking.describe(note(f"{target.model_uri} on {len(images)} test images (AdvTrain + AdvTest)"
                               + (f", attacked at ε = {', '.join(map(str, eps_values))} via {run.backend}"
                                  if specs else ""),
                               metric_columns({target.model_uri: outcome.metrics()}),
                               check.note() if check is not None and check.degenerate else ""))
    return outcome


def checklist(target: Target, plan: ChecklistPlan, run: RunOptions = RunOptions()) -> list[CheckResult]:
    """The checklist on ``target``'s attacked images (AdvTrain + AdvTest), each attack an attack run."""
    child = dataclasses.replace(run, parent_run_id=None)
    x = torch.cat([x for x, _ in target.clean.values()])
    y = torch.cat([y for _, y in target.clean.values()])
    vanished = vanishing_share(target.model, x, y, run.batch_size, run.device)
    return run_checklist(plan, lambda spec: attack(target, spec, child).metrics["adv_acc"], vanished, len(y))
