"""The registry gate applied: two evaluations of the same images decide whether the challenger takes
the champion's alias (:mod:`medart.gate`), and the decision is kept where both are looked up — on
both evaluation runs and on both registered versions."""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
from mlflow.entities import Metric, RunTag

from medart.errors import ConfigError
from medart.gate import CLEAN, Decision, Gate, Term
from medart.intervals import Estimate, wilson
from medart.models import registry
from medart.models.sanity import DEGENERATE_TAG
from medart.stages.evaluate import EvaluateOutcome

ROLES = ("champion", "challenger")


@dataclass(frozen=True)
class GatePlan:
    """The alias the gate moves and the two versions of one registered model it compares, resolved
    before anything is evaluated."""

    name: str
    alias: str
    champion_version: str
    challenger_version: str

    @classmethod
    def resolve(cls, champion_uri: str, challenger_uri: str) -> "GatePlan":
        """From ``models:/<name>@<alias>`` (the alias to move) and a second version of ``<name>``;
        a one-line :class:`~medart.errors.ConfigError` otherwise."""
        ref = champion_uri.removeprefix("models:/")
        if not champion_uri.startswith("models:/") or "@" not in ref:
            raise ConfigError(f"`gate` moves an alias: give `model_uri` as models:/<name>@<alias> (default: the dataset's "
                              f"champion), got {champion_uri}")
        name, alias = ref.split("@", 1)
        challenger = registry.version_of(challenger_uri)
        if challenger is None or challenger[0] != name:
            raise ConfigError(f"`gate` compares two versions of {name}: give `compare_with` as an alias of it (e.g. "
                              f"challenger) or models:/{name}/<version>, got {challenger_uri}")
        return cls(name, alias, registry.version_of(champion_uri)[1], challenger[1])


@dataclass(frozen=True)
class GateOutcome:
    plan: GatePlan
    decision: Decision
    estimates: dict[str, dict[str, Estimate]]  # role → measure (clean, pgd@2/255 …) → accuracy with its interval


def metric_key(term: Term) -> str:
    """The evaluation's metric name for what ``term`` measures (:meth:`EvaluateOutcome.metrics`)."""
    return "test_acc" if term.eps is None else f"adv_acc.{term.metric}.eps{term.eps * 255:.3g}"


def estimates(outcome: EvaluateOutcome) -> dict[str, Estimate]:
    """Clean and robust accuracy of an evaluation with their Wilson intervals, by measure
    (``clean``, ``pgd@2/255`` …); every one on the same ``n`` images."""
    n = int(outcome.clean["n"])
    out = {CLEAN: wilson(round(outcome.clean["acc"] * n), n)}
    for row in outcome.robust:
        out[Term(row.attack, row.eps).measure] = wilson(round(row.adv_acc * n), n)
    return out


def apply_gate(gate: Gate, plan: GatePlan, champion: EvaluateOutcome, challenger: EvaluateOutcome) -> GateOutcome:
    """Decide with ``gate`` on the two evaluations (of the same images), record the decision and
    move ``plan.alias`` to the challenger's version when it is promoted.

    Recorded on both evaluation runs: tags ``medart.gate`` (the gate), ``medart.gate.decision``
    (``promoted`` or ``refused``), ``medart.gate.reason``, ``medart.gate.role``; metrics
    ``<metric>_ci_low``, ``<metric>_ci_high``, ``<metric>_n`` beside each gated metric
    (``test_acc``, ``adv_acc.pgd.eps2`` …); the artifact ``gate.json`` with both models' numbers.
    On both registered versions: tags ``medart.gate``, ``medart.gate.decision``,
    ``medart.gate.reason``, ``medart.gate.role``, ``medart.gate.against`` (the other version) and
    ``medart.gate.run_id`` (its evaluation run).
    """
    by_role = {"champion": estimates(champion), "challenger": estimates(challenger)}
    missing = [t.measure for t in gate.terms if t.measure not in by_role["champion"]]
    if missing:
        raise ConfigError(f"the evaluations did not measure {', '.join(missing)}, which the gate needs")
    decision = gate.decide(by_role["champion"], by_role["challenger"], _degenerate(plan, challenger))
    outcomes = {"champion": champion, "challenger": challenger}
    versions = {"champion": plan.champion_version, "challenger": plan.challenger_version}
    record = {"gate": gate.text(), "decision": _word(decision), "reason": decision.reason, "registered_model": plan.name,
              "alias": plan.alias,
              **{role: {"version": versions[role], "run_id": outcomes[role].run_id,
                        "accuracy": {m: _numbers(e) for m, e in by_role[role].items()}} for role in ROLES},
              "terms": [{"term": v.term.text(), "bound": v.bound, "passed": v.passed} for v in decision.verdicts]}
    client = mlflow.MlflowClient()
    for role, other in zip(ROLES, reversed(ROLES)):
        tags = {"medart.gate": gate.text(), "medart.gate.decision": _word(decision), "medart.gate.reason": decision.reason,
                "medart.gate.role": role}
        metrics = {}
        for term in gate.terms:
            metrics |= by_role[role][term.measure].metrics(metric_key(term))
        run_id = outcomes[role].run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_dict(run_id, record, "gate.json")
        registry.tag_version(plan.name, versions[role], tags | {"medart.gate.against": versions[other],
                                                                 "medart.gate.run_id": run_id})
    if decision.promote:
        client.set_registered_model_alias(plan.name, plan.alias, plan.challenger_version)
    return GateOutcome(plan, decision, by_role)


def _degenerate(plan: GatePlan, challenger: EvaluateOutcome) -> str:
    """Why the challenger is degenerate — its version's tag, or the guard of its evaluation — or ''."""
    tags = mlflow.MlflowClient().get_model_version(plan.name, plan.challenger_version).tags
    if tags.get(DEGENERATE_TAG) == "true":
        return tags.get(f"{DEGENERATE_TAG}_reason", "tagged degenerate")
    return challenger.check.reason if challenger.check is not None else ""


def _word(decision: Decision) -> str:
    return "promoted" if decision.promote else "refused"


def _numbers(estimate: Estimate) -> dict[str, float]:
    return {"value": estimate.value, "ci_low": estimate.low, "ci_high": estimate.high, "n": estimate.n}
