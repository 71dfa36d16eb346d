"""The report's "How to read this" section, written from what the runs did.

It defines only what the page shows: the splits whose sizes the runs logged, the attacks and the
detectors that ran (their declarations, :data:`~medart.attacks.specs.ATTACK_ENTRIES` and
:data:`~medart.detectors.DETECTORS`, handed in as a :class:`Glossary` by the report stage, say
what each is), and each kind of metric the runs logged,
with its n (images or AdvTest pairs) and its 95 % interval's method (:mod:`medart.intervals`).
The paper's numbers appear only for the (task, attack, ε, detector) a run measured, each labelled
with its table. Every number is in % or k/255; counts are whole numbers.

Pure rendering of :class:`~medart.render.report.RunView` records (the run and its descendants at
any depth, as the report page collected them): no MLflow, nothing recomputed but the Wilson
interval of an accuracy from its value and n.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from medart.budget import logged_eps
from medart.intervals import MIN_PAIRS, Estimate, interval_names, wilson
from medart.numbers import auc_ci, eps_label, pct
from medart.render import report

if TYPE_CHECKING:
    from medart.render.report import RunView

PAPER = "Ma et al. 2021"


@dataclass(frozen=True)
class Glossary:
    """What the section says an attack or a detector is: the declarations (a floor above
    rendering), ``attacks`` name → entry with ``title`` and ``about``
    (:data:`~medart.attacks.specs.ATTACK_ENTRIES`), ``detectors`` name → entry with ``about`` and
    ``paper`` (:data:`~medart.detectors.DETECTORS`)."""

    attacks: Mapping[str, Any]
    detectors: Mapping[str, Any]

    @property
    def attack_prefix(self) -> re.Pattern:
        return re.compile(r"^(?:" + "|".join(re.escape(a) for a in self.attacks) + r")\.")

    @property
    def detector_metric(self) -> re.Pattern:
        return re.compile(r"(?:^|\.)(?:auc|detect_acc|seconds)_(" + "|".join(self.detectors) + r")(?:_std)?$")


@dataclass(frozen=True)
class _Split:
    """A split of the protocol: its name, what it is for, and the params that log its size."""

    name: str
    about: str
    params: tuple[str, ...]
    unit: str = "images"


SPLITS = (
    _Split("Train", "fits the model", ("n_train",)),
    _Split("Val", "picks the model's best epoch (MedMNIST's own validation split, else 10 % of Train)", ("n_val",)),
    _Split("Test", "held out from training; divided, stratified and seeded, into AdvTrain and AdvTest "
                   "(20 % AdvTest unless the run says otherwise)", ("n_test",)),
    _Split("AdvTrain", "test images that are attacked; the detectors are fitted on its clean/adversarial pairs",
           ("n_adv_train",)),
    _Split("AdvTrain pairs", "correctly classified AdvTrain images with their adversarial versions: what each "
                             "detector is fitted on", ("n_fit_pairs",), "pairs"),
    _Split("AdvTest", "test images that are attacked; the detectors are scored on its pairs", ("n_adv_test",)),
    _Split("AdvTest pairs", "correctly classified AdvTest images with their adversarial versions: the n of every "
                            "detection AUC", ("n_test_pairs",), "pairs"),
)


@dataclass(frozen=True)
class _Metric:
    """A kind of logged metric: which names it covers (after any ``<attack>.`` prefix), what it is,
    where its n comes from and how its 95 % interval is made."""

    pattern: str
    shown: str
    about: str
    n: Callable[["RunView"], int | None]
    n_unit: str
    interval: str

    def matches(self, name: str, attack_prefix: re.Pattern) -> bool:
        return re.fullmatch(self.pattern, attack_prefix.sub("", name)) is not None


def _param_int(view: "RunView", *keys: str) -> int | None:
    values = [view.params.get(k) for k in keys]
    return sum(int(v) for v in values) if all(v not in (None, "") for v in values) else None


def _attacked(view: "RunView") -> int | None:
    n = view.metrics.get("n")
    return int(n) if n is not None and not math.isnan(n) else _param_int(view, "n_adv_train", "n_adv_test")


def _pairs(view: "RunView") -> int | None:
    return _param_int(view, "n_test_pairs")


def _test_images(view: "RunView") -> int | None:
    pairs = _pairs(view)
    return None if pairs is None else 2 * pairs


WILSON, DELONG, NONE = "Wilson", "DeLong", "none (not a proportion)"
METRICS = (
    _Metric(r"(clean|adv)_acc", "clean_acc, adv_acc",
            "the model's accuracy on the attacked images (AdvTrain + AdvTest), before and after the attack",
            _attacked, "images", WILSON),
    _Metric(r"(clean|adv)_balanced_acc", "clean_balanced_acc, adv_balanced_acc",
            "the mean over the classes of each class's recall: 50 % for a 2-class model that answers one class",
            _attacked, "images", NONE),
    _Metric(r"(clean|adv)_recall_.+", "clean_recall_<class>, adv_recall_<class>",
            "the share of one class's attacked images the model answers correctly",
            _attacked, "images of all classes (that class's are fewer)", WILSON),
    _Metric(r"(clean|adv)_auc", "clean_auc, adv_auc",
            "the model's ROC-AUC of its class scores on the attacked images (one-vs-rest mean for more than 2 "
            "classes); an AUC under 50 % ranks the classes the wrong way round", _attacked, "images", DELONG),
    _Metric(r"success_rate", "success_rate",
            "the share of correctly classified attacked images whose answer the attack changed",
            _attacked, "attacked images (its own n: the correctly classified ones among them)", WILSON),
    _Metric(r"(linf|l2)_(mean|max)", "linf_mean, linf_max, l2_mean, l2_max",
            "the size of the perturbation, L∞ and L2, logged in pixel units of [0, 1] images: ×255 gives k/255; "
            "L∞ never exceeds ε", _attacked, "images", NONE),
    _Metric(r"auc_[a-z_]+", "auc_<detector>",
            "the detector's ROC-AUC on the AdvTest pairs, adversarial = positive: 50 % is chance, 100 % a perfect "
            "separation; 'degenerate' where its fit measured nothing (a constant score)", _pairs, "AdvTest pairs",
            DELONG),
    _Metric(r"auc_[a-z_]+_std", "auc_<detector>_std",
            "the spread (standard deviation, in %) of the detector's AUC over the re-drawn splits of --repeats",
            _pairs, "AdvTest pairs per repeat", NONE),
    _Metric(r"detect_acc_[a-z_]+", "detect_acc_<detector>",
            "the share of AdvTest images (clean and adversarial) the detector labels right", _test_images,
            "AdvTest images (2 per pair)", WILSON),
    _Metric(r"guard\.(clean_acc|clean_balanced_acc|top_share)", "guard.clean_acc, guard.clean_balanced_acc, "
            "guard.top_share", "the degenerate-model guard on the clean images: accuracy, balanced accuracy, and the "
            "share of images given the most common answer (100 %: the model answers one class)",
            _attacked, "images", WILSON),
    _Metric(r"(best_)?(train|val|test)_(acc|balanced_acc|auc|loss|recall_.+)", "train_*, val_*, test_*, best_*",
            "the training run's accuracy, balanced accuracy, AUC, recall per class and cross-entropy loss on "
            "Train, Val and Test (best_: at the epoch Val picked)", lambda v: _param_int(v, "n_test"),
            "Test images (Train and Val: their own n above)", WILSON),
    _Metric(r"n", "n", "how many images the attack run attacked (AdvTrain + AdvTest)", _attacked, "images", NONE),
    _Metric(r"(.*_)?seconds(_.+)?|.*per_second|best_epoch", "seconds*, *_per_second, best_epoch",
            "how long a step took and which epoch Val picked: bookkeeping, not results", lambda v: None, "", NONE),
)


def _e(value) -> str:
    return html.escape(str(value))


def _counts(values: Iterable[int | None], unit: str) -> str:
    found = sorted({v for v in values if v is not None})
    return f"{', '.join(f'{v:,}' for v in found)} {unit}" if found else "not logged"


def _splits(runs: Sequence["RunView"]) -> list[tuple[str, str, str]]:
    rows = []
    for split in SPLITS:
        sizes = [_param_int(r, *split.params) for r in runs]
        if any(s is not None for s in sizes):
            rows.append((split.name, split.about, _counts(sizes, split.unit)))
    return rows


def _metrics(runs: Sequence["RunView"], prefix: re.Pattern) -> tuple[list[tuple[str, str, str, str]], list[str], list[str]]:
    """Rows (metric, what, n, interval) for each kind of metric logged, the names no kind covers,
    and warnings for detection AUCs resting on fewer than MIN_PAIRS pairs."""
    rows, warnings = [], []
    names = {name for r in runs for name in r.metrics}
    # a fraction's interval and n, logged beside it (medart.intervals): one row for them all
    companions = {k for name in names if f"{name}_ci_low" in names for k in interval_names(name)}
    if companions:
        rows.append(("<metric>_ci_low, <metric>_ci_high, <metric>_n", "the 95 % interval of the metric named before "
                     "the suffix (a fraction, like it) and the n it was counted over", "in <metric>_n",
                     f"{WILSON} or {DELONG}, as the metric's row says"))
    for kind in METRICS:
        carriers = [r for r in runs if any(kind.matches(name, prefix) for name in r.metrics)]
        if not carriers:
            continue
        n = [kind.n(r) for r in carriers] or [None]
        if kind.n is _pairs:  # a parent's <attack>.auc_<d> rests on its children's pairs
            n += [_pairs(d) for d in runs if "n_test_pairs" in d.params]
        rows.append((kind.shown, kind.about, *((_counts(n, kind.n_unit), kind.interval) if kind.n_unit else ("—", "—"))))
        if kind.interval == DELONG and kind.n is _pairs and (few := [v for v in n if v is not None and v < MIN_PAIRS]):
            warnings.append(f"Some detection AUCs rest on {min(few)} AdvTest pairs, fewer than {MIN_PAIRS}: their "
                            "intervals are wide, and one pair more or less moves the AUC by several points.")
    unknown = {name for name in names - companions if not any(kind.matches(name, prefix) for kind in METRICS)}
    return rows, sorted(unknown), warnings


def _attacks(runs: Sequence["RunView"], entries: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    eps: dict[str, set[str]] = {}
    for r in runs:
        if (name := r.params.get("attack.name")) in entries and "attack.eps" in r.params:
            eps.setdefault(name, set()).add(eps_label(logged_eps(r.params, "attack.eps")))
    return [(entries[a].title, entries[a].about, ", ".join(sorted(e, key=lambda s: float(s[:-4]))))
            for a, e in sorted(eps.items())]


def _detectors(runs: Sequence["RunView"], glossary: Glossary) -> list[str]:
    """Detectors with a logged number (``auc_<d>``, ``<attack>.auc_<d>``, ``detect_acc_<d>``), in declaration order."""
    metric = glossary.detector_metric
    ran = {m[1] for r in runs for name in r.metrics if (m := metric.search(name))}
    return [d for d in glossary.detectors if d in ran]


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else pct(value)


def _measured_eps(view: "RunView") -> float | None:
    key = "attack.eps" if "attack.eps" in view.params else None
    return round(logged_eps(view.params, key) * 255, 2) if key else None


def _with_interval(value: float, n: int | None) -> str:
    """An accuracy in % with its Wilson interval from its n (``k = round(value · n)``)."""
    if n is None or math.isnan(value):
        return _percent(value)
    return wilson(round(value * n), n).percent(2).removesuffix(" %")


def _paper_rows(runs: Sequence["RunView"]) -> list[tuple[str, ...]]:
    """(quantity, attack, ε, detector, measured, n, paper, table) for each measured combination the
    paper printed a number for; newest run of a combination wins."""
    found: dict[tuple, tuple] = {}
    for r in sorted(runs, key=lambda r: r.start_time or 0):
        task = report.PAPER_TASKS.get(r.params.get("dataset", ""))
        attack, eps, m = r.params.get("attack.name"), _measured_eps(r), r.metrics
        if task is None or attack is None or eps is None or r.params.get("attack.targeted", "False") != "False":
            continue
        n = _attacked(r)
        images = (n, "images")
        if "adv_acc" in m:
            label = f"{eps:g}/255"
            if (paper := report.PAPER_TABLE3.get(eps, {}).get(task, {}).get(attack)) is not None:
                found[("acc", attack, eps)] = ("accuracy under attack", attack, label, "", _with_interval(m["adv_acc"], n),
                                               images, paper, 3)
                found[("acc", "none")] = ("clean accuracy", "none", "", "", _with_interval(m["clean_acc"], n), images,
                                          report.PAPER_TABLE3[eps][task]["none"], 3)
            if eps == 1.0 and task in report.PAPER_TABLE2 and attack in report.PAPER_TABLE2[task]:
                found[("auc", attack)] = ("model's AUC under attack", attack, label, "", _percent(m["adv_auc"]), images,
                                          report.PAPER_TABLE2[task][attack][1], 2)
                found[("auc", "none")] = ("model's clean AUC", "none", "", "", _percent(m["clean_auc"]), images,
                                          report.PAPER_TABLE2[task]["none"][1], 2)
        if eps == 1.0 and task in report.PAPER_TABLE4 and attack in report.TABLE4_ATTACKS:
            for d, values in report.PAPER_TABLE4[task].items():
                if f"auc_{d}" in m:  # with its DeLong interval where the run logged one
                    auc = auc_ci(Estimate.read(m, f"auc_{d}"), 2)
                    found[("det", attack, d)] = ("detection AUC", attack, "1/255", d, auc, (_pairs(r), "pairs"),
                                                 values[report.TABLE4_ATTACKS.index(attack)], 4)
    return [(q, a.upper() if a != "none" else a, eps, d.upper(), measured, _counts([n[0]], n[1]) if n[0] else "not logged",
             f"{paper:.2f}", f"{PAPER} (Pattern Recognition 110, 107332), Table {table}")
            for q, a, eps, d, measured, n, paper, table in sorted(found.values(), key=lambda f: (f[7], f[1] != "none", f[1], f[3]))]


#: what each table of a ``medart compare`` run is, by its artifact (only those the run logged are explained)
COMPARISON_TABLES = {
    "compare.md": ("every measurement, then the worst case per model and ε",
                   "One row per attack run (or imported RobustBench file): a model, an attack, ε, the backend that ran "
                   "it, clean accuracy and accuracy under the attack on the row's n images. Below it, per model and ε: "
                   "the worst of the paper's attacks (FGSM, BIM, PGD, CW), AutoAttack's, and the robust accuracy, the "
                   "lowest over every attack that ran — the number to quote, since an attacker picks the strongest."),
    "tradeoff.md": ("what a defence buys and what it costs",
                    "One row per model AutoAttack (standard version) measured: its defence as the registry recorded it "
                    "(<code>standard</code>: not hardened; the trainer and its ε for a copy <code>medart harden</code> "
                    "made; <code>+ jpeg:…</code> for a preprocessing defence in front), clean accuracy on AutoAttack's "
                    "own images, and AutoAttack's robust accuracy at each ε. In its figure up is more robust and right "
                    "more accurate; on the diagonal an attack costs nothing. Intervals that overlap do not separate "
                    "two models."),
}


def _comparison(runs: Sequence["RunView"]) -> str:
    """HTML: what the tables of a comparison run (``compare.md``, ``tradeoff.md``) are; empty for other runs."""
    logged = {path for r in runs for path, _ in r.tables}
    rows = [(name, title, about) for name, (title, about) in COMPARISON_TABLES.items() if name in logged]
    if not rows:
        return ""
    return ("<h3>The comparison's tables</h3><p class='note'>Accuracies in % with 95 % Wilson intervals over the "
            "row's n images (a row from a file that gave no n: the value alone).</p>"
            + "".join(f"<p><b><code>{name}</code></b>, {_e(title)}: {about}</p>" for name, title, about in rows))


def how_to_read(runs: Sequence["RunView"], glossary: Glossary) -> str:
    """HTML: the "How to read this" section for ``runs`` (a run and its descendants at any depth, or
    an experiment's runs and theirs); empty when they logged nothing it could explain."""
    runs = list(runs)
    table = report.html_table
    parts = []
    if rows := _splits(runs):
        parts.append("<h3>Splits (the paper's protocol)</h3>" + table(("split", "what it is for", "n in these runs"), rows))
    if rows := _attacks(runs, glossary.attacks):
        parts.append("<h3>Attacks</h3><p class='note'>ε is the L∞ budget in grey levels of an 8-bit image: 1/255 "
                     "changes a pixel by at most one level.</p>" + table(("attack", "what it does", "ε"), rows))
    if detectors := _detectors(runs, glossary):
        parts.append("<h3>Detectors</h3>" + table(
            ("detector", "what it measures", "Ma et al.'s"),
            [(d.upper(), glossary.detectors[d].about, "yes" if glossary.detectors[d].paper else "no (medart's addition)") for d in detectors]))
    metric_rows, unknown, warnings = _metrics(runs, glossary.attack_prefix)
    if metric_rows:
        parts.append("<h3>Metrics</h3><p class='note'>Accuracies, rates and AUCs are in %. Where an interval is "
                     "given it is 95 %: Wilson's score interval for accuracies and rates (k of n images), DeLong's for "
                     "AUCs (n: the smaller of the clean and adversarial groups; Newcombe's where the AUC is 0 % or "
                     "100 %). A metric name with an attack in front (<code>pgd.adv_acc</code>) is that attack's.</p>"
                     + table(("metric", "what it is", "n", "95 % interval"), metric_rows)
                     + "".join(f"<p class='warn'>{_e(w)}</p>" for w in warnings))
        if unknown:
            parts.append("<p class='note'>Not defined here (see the docs of the command that logged them): "
                         + _e(", ".join(unknown)) + ".</p>")
    if comparison := _comparison(runs):
        parts.append(comparison)
    if rows := _paper_rows(runs):
        parts.append("<h3>The paper's numbers for what these runs measured</h3><p class='note'>The paper's numbers "
                     "are as printed in the paper, not re-measured here: its models, images (full size, other sources), "
                     "pretraining and training length differ from these runs'. The measured accuracy is given with its "
                     "95 % Wilson interval.</p>" + table(
                         ("quantity", "attack", "ε", "detector", "measured (%)", "n", "paper (%)", "source"), rows,
                         (4, 5, 6)))
    if not parts:
        return ""
    return "<h2>How to read this</h2>" + "\n".join(parts)


__all__ = ["METRICS", "SPLITS", "how_to_read"]
