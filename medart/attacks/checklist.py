"""The evaluation checklist of Carlini et al. 2019 (*On evaluating adversarial robustness*, §5):
six sanity checks that a robust accuracy is measured, not an artefact of the attack, and for a
model behind a preprocessing defence a seventh: plain PGD against PGD through the defence (BPDA,
EOT; Athalye et al. 2018), whose gap is the defence's gradient masking.

A model that hides its gradients (a hard-rounding input layer, a saturated softmax) looks robust
to gradient attacks without being so; these checks catch the usual symptoms. Each compares robust
accuracies of the same images under attacks planned by :func:`checklist_specs`, measured by
whatever the caller passes as ``accuracy`` (the evaluate stage: cached attack runs; tests: the
attack backends directly), plus the share of images whose input gradient vanishes.

A comparison passes when it is off by at most :data:`TOLERANCE_IMAGES` image: the attacks are
seeded but random, and one image is within their noise on a few hundred.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from medart.analysis.saliency import input_gradient
from medart.attacks.specs import AttackSpec, make_spec
from medart.numbers import eps_label, pct

TOLERANCE_IMAGES = 1
VANISHING = 1e-10  # an input gradient whose largest entry is below this has vanished (float32 underflow territory)
UNBOUNDED = 1.0  # ε that lets an attack replace the whole image


@dataclass(frozen=True)
class CheckResult:
    """One check: what it asks, whether it passed, the numbers, and what a failure suggests."""

    check: str  # short id, e.g. ``monotone_eps``
    question: str
    passed: bool
    measured: str  # accuracies in %, for people
    suggests: str  # "" when passed


@dataclass(frozen=True)
class ChecklistPlan:
    """The attacks the checks need: ``main`` is the ε the others are compared at (the largest
    evaluated), ``ladder`` the ε values PGD climbs, ``steps``/``queries`` the APGD and Square budgets.
    ``plain``: the model is behind a preprocessing defence (:mod:`medart.defences`), which the
    attacks go through (BPDA, EOT) as they do by default; PGD also runs plain, for the seventh check."""

    eps_values: tuple[float, ...]
    steps: int = 100
    queries: int = 5000
    plain: bool = False

    @property
    def main(self) -> float:
        return max(self.eps_values)

    @property
    def ladder(self) -> tuple[float, ...]:
        return tuple(sorted({*self.eps_values, self.main / 2, min(2 * self.main, UNBOUNDED)}))

    def specs(self) -> dict[str, AttackSpec]:
        """Name → spec of every attack the checks compare, at their own defaults otherwise."""
        eps = self.main
        out = {f"pgd@{eps_label(e)}": make_spec("pgd", e) for e in self.ladder}
        out |= {"pgd@unbounded": make_spec("pgd", UNBOUNDED), "fgsm": make_spec("fgsm", eps), "bim": make_spec("bim", eps),
                "apgd-ce": make_spec("apgd-ce", eps, self.steps), "square": make_spec("square", eps, self.queries),
                "apgd-ce+": make_spec("apgd-ce", eps, 2 * self.steps, restarts=2)}
        if self.plain:
            out["pgd-plain"] = make_spec("pgd", eps, defence_gradient="plain")
        return out


def vanishing_share(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128, device: str = "auto") -> float:
    """Share of images whose cross-entropy input gradient has no entry of size :data:`VANISHING` or more."""
    peak = input_gradient(model, x, y, "loss", batch_size, device).flatten(1).abs().amax(dim=1)
    return float((peak < VANISHING).float().mean())


def run_checklist(plan: ChecklistPlan, accuracy: Callable[[AttackSpec], float], vanished: float, n: int) -> list[CheckResult]:
    """The six checks on ``n`` images (seven with ``plan.plain``); ``accuracy(spec)`` is their
    robust accuracy under ``spec`` (a fraction), ``vanished`` the share with vanishing input gradients."""
    acc = {name: accuracy(spec) for name, spec in plan.specs().items()}
    acc["pgd"] = acc[f"pgd@{eps_label(plan.main)}"]  # PGD at the ε the other attacks run at
    slack = TOLERANCE_IMAGES / n
    checks = [_monotone(plan, acc, slack), _unbounded(acc), _iterative(acc, slack), _white_box(acc, slack),
              _more_budget(plan, acc, slack), _vanishing(vanished, slack)]
    return checks + ([_sees_defence(plan, acc, slack)] if plan.plain else [])


def _monotone(plan: ChecklistPlan, acc: dict, slack: float) -> CheckResult:
    curve = [acc[f"pgd@{eps_label(e)}"] for e in plan.ladder]
    rises = [f"{eps_label(a)}→{eps_label(b)}" for a, b, u, v in zip(plan.ladder, plan.ladder[1:], curve, curve[1:]) if v > u + slack]
    return CheckResult("monotone_eps", "Does accuracy fall as ε grows (PGD)?", not rises,
                       "PGD " + " → ".join(f"{pct(a, 1)} %" for a in curve) + f" at ε = {', '.join(eps_label(e) for e in plan.ladder)}",
                       f"accuracy rises at {', '.join(rises)}: gradient masking, or an attack that does not converge"
                       if rises else "")


def _unbounded(acc: dict) -> CheckResult:
    left = acc["pgd@unbounded"]
    return CheckResult("unbounded_eps", "Does ε = 1 (the whole image) drive accuracy to 0 %?", left == 0.0,
                       f"PGD at ε = 1: {pct(left, 1)} %",
                       "an attack free to replace the image should always win: gradient masking, or a model that "
                       "predicts one class whatever the input" if left else "")


def _iterative(acc: dict, slack: float) -> CheckResult:
    worse = [name.upper() for name in ("bim", "pgd") if acc[name] > acc["fgsm"] + slack]
    return CheckResult("iterative_beats_single_step", "Do iterative attacks (BIM, PGD) beat one step (FGSM)?", not worse,
                       f"FGSM {pct(acc['fgsm'], 1)} %, BIM {pct(acc['bim'], 1)} %, PGD {pct(acc['pgd'], 1)} %",
                       f"{' and '.join(worse)} leave more images correct than FGSM: a step size too small to reach the "
                       "ε-ball's edge, or a loss surface that is noisy at small scale (gradient masking)" if worse else "")


def _white_box(acc: dict, slack: float) -> CheckResult:
    square, apgd, pgd = acc["square"], acc["apgd-ce"], acc["pgd"]
    if apgd > square + slack:
        why = "the black-box Square attack beats the gradient attacks: gradient masking; trust Square/AutoAttack"
    elif pgd > square + slack:
        why = "Square beats PGD but not APGD: PGD's fixed step size is off; trust APGD/AutoAttack"
    else:
        why = ""
    return CheckResult("white_box_beats_black_box", "Do gradient attacks (APGD-CE, PGD) beat the black-box Square?",
                       not why, f"APGD-CE {pct(apgd, 1)} %, PGD {pct(pgd, 1)} %, Square {pct(square, 1)} %", why)


def _more_budget(plan: ChecklistPlan, acc: dict, slack: float) -> CheckResult:
    base, more = acc["apgd-ce"], acc["apgd-ce+"]
    return CheckResult("more_budget_no_gain", "Do more steps and restarts leave accuracy no higher (APGD-CE)?",
                       more <= base + slack,
                       f"APGD-CE {pct(base, 1)} % ({plan.steps} steps, 1 restart), {pct(more, 1)} % ({2 * plan.steps} steps, 2 restarts)",
                       "more attack budget raised accuracy: a randomised model or an attack that diverges; "
                       "average over the randomness (EOT) before trusting the number" if more > base + slack else "")


def _vanishing(vanished: float, slack: float) -> CheckResult:
    return CheckResult("no_vanishing_gradients", f"Are input gradients alive (max |∇x CE| ≥ {VANISHING:g})?",
                       vanished <= slack, f"{pct(vanished, 1)} % of images with a vanishing gradient",
                       "gradients vanish: gradient masking (rounding, saturating layers) or a saturated softmax; "
                       "gradient attacks on cross-entropy are blind there — check apgd-dlr and square" if vanished > slack else "")


def _sees_defence(plan: ChecklistPlan, acc: dict, slack: float) -> CheckResult:
    plain, through = acc["pgd-plain"], acc["pgd"]
    masked = plain > through + slack
    return CheckResult("defence_holds_adaptively",
                       "Does the defence hold against PGD through it (BPDA/EOT) as well as against plain PGD?", not masked,
                       f"PGD plain {pct(plain, 1)} %, through the defence (BPDA/EOT) {pct(through, 1)} % at ε = {eps_label(plan.main)}",
                       f"the defence works only against the plain attack ({pct(plain, 1)} % vs {pct(through, 1)} %): gradient "
                       "masking (a zero or random gradient through JPEG, rounding or noise); report the BPDA/EOT number"
                       if masked else "")


def direct_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, backend: str = "art",
                    seed: int = 0, batch_size: int = 128) -> Callable[[AttackSpec], float]:
    """``accuracy`` for :func:`run_checklist` that runs each attack through ``backend`` here,
    without runs or cache (the evaluate stage uses cached attack runs instead)."""
    from medart.attacks import make_attack

    def accuracy(spec: AttackSpec) -> float:
        adv = make_attack(model, spec, num_classes, backend, batch_size).generate(x, y, seed=seed)
        with torch.no_grad():
            return float((model(adv).argmax(dim=1) == y).float().mean())

    return accuracy
