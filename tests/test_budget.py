"""ε as one typed value (issue 25): read from text once, at the face, into :class:`medart.budget.Eps`;
held typed by every request and spec; logged as k/255 beside its float; the cache keys unchanged."""

from __future__ import annotations

import ast
import collections.abc
import re
import typing
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from medart.attacks import make_spec
from medart.budget import Eps, eps_params, logged_eps
from medart.cli import main, options
from medart.errors import ConfigError
from medart.mlproject import ENTRY_POINTS

ROOT = Path(__file__).resolve().parents[1]


def test_eps_reads_text_prints_k_over_255_and_is_its_float():
    one = Eps("1/255")
    assert str(one) == one.label == f"{one}" == "1/255" and one == Eps(1 / 255) == 1 / 255
    assert hash(one) == hash(1 / 255) and {one: "a"}[1 / 255] == "a"  # a dict keyed by floats finds it
    assert Eps("0.5/255") < Eps("0.0039") < Eps("1/255") < Eps(2 / 255)
    assert sorted([Eps("4/255"), Eps(0.5 / 255), Eps("1/255")]) == [0.5 / 255, 1 / 255, 4 / 255]
    for text in ("1/255", "0.5/255", "0.25/255", "32/255", "8/255", "0.2/255"):  # k/255 round-trips exactly
        assert str(Eps(text)) == text and Eps(str(Eps(text))) == Eps(text)
    assert str(Eps("0.0039")) == "0.994/255" and Eps("0.0039") == 0.0039  # printed to 3 digits, held exactly
    assert repr(one) == "Eps('1/255')" and eval(repr(Eps(0.0039)), {"Eps": Eps}) == 0.0039
    assert Eps(one) is one and type(one * 2) is float and f"{one:.4f}" == "0.0039"
    with pytest.raises(AttributeError):
        one.value = 2  # immutable: no attributes to set
    for bad, fragment in (("3", "ε must be in (0, 1]"), (0, "ε must be in (0, 1]"), ("x", "cannot read ε from 'x'"),
                          ("9/0", "cannot read ε from '9/0'"), (float("nan"), "ε must be in (0, 1]")):
        with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("]", r"\]")):
            Eps(bad)
    with pytest.raises(ConfigError, match="`radius` must be in"):
        Eps(2.0, "radius")
    with pytest.raises(ConfigError, match="not the text '1/255,2/255'"):
        Eps.many("1/255,2/255")  # a list is read at the face
    assert Eps.many([1 / 255, Eps("2/255")]) == (1 / 255, 2 / 255)


def test_eps_goes_wherever_its_float_went():
    eps = Eps("2/255")
    x = torch.rand(4)
    assert torch.equal(x.clamp(-eps, eps), x.clamp(-2 / 255, 2 / 255))
    assert np.asarray([eps]).dtype == np.float64 and np.float32(eps) == np.float32(2 / 255)
    import copy
    import json
    import pickle

    assert json.dumps({"eps": eps}) == json.dumps({"eps": 2 / 255})  # JSON writes the float
    assert type(pickle.loads(pickle.dumps(eps))) is Eps and type(copy.deepcopy(eps)) is Eps


def _calls(name: str) -> list[str]:
    """``file:function`` of every call of ``name`` in medart/ and benchmarks/."""
    found = []
    for path in sorted([*ROOT.joinpath("medart").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        for scope in ast.walk(tree):
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(scope):
                    if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                        found.append(f"{path.relative_to(ROOT)}:{scope.name}")
    return found


def test_eps_text_is_read_in_one_place():
    """The one reader of ε text, ``parse_eps``, is called only by Eps's constructor; the command
    line's types (and the benchmarks' options, which use them) build Eps from the text they get."""
    assert _calls("parse_eps") == ["medart/budget.py:__new__"]
    readers = [p for p in [*ROOT.joinpath("medart").rglob("*.py"), *ROOT.joinpath("benchmarks").rglob("*.py")]
               if any("/" in pattern for pattern in re.findall(r"re\.compile\(r?[\"'](.*?)[\"']", p.read_text()))
               and p.name != "budget.py"]
    assert readers == []  # no second regex for k/255 (a pattern with a slash)
    # every ε option of every command is read by the ε types, so a stage never gets text
    for command in main.commands.values():
        for param in command.params:
            if param.name in ("eps", "step_size", "radius", "detect_eps", "eps_max", "eps_tolerance", "curve_eps",
                              "landscape_max_eps"):
                assert isinstance(param.type, (options.Eps, options.EpsList)), (command.name, param.name)


def _takes_several(hint) -> bool:
    """Whether a type hint is a sequence (of ε), not one ε."""
    return typing.get_origin(hint) in (tuple, list, collections.abc.Sequence)


def test_each_entry_point_takes_eps_as_its_stage_does():
    """``-P eps`` is a list (comma-separated) where the stage takes several ε, one value where it takes one."""
    from medart.defences.training import HardenConfig
    from medart.stages.ablation_grid import AblationSettings
    from medart.stages.analyze import AnalysisRequest
    from medart.stages.detect import DetectRequest
    from medart.stages.evaluate import evaluate
    from medart.stages.sweep import sweep

    stage = {"main": typing.get_type_hints(DetectRequest)["eps"], "attack": typing.get_type_hints(make_spec)["eps"],
             "detect": typing.get_type_hints(DetectRequest)["eps"], "adaptive": typing.get_type_hints(DetectRequest)["eps"],
             "sweep": typing.get_type_hints(sweep)["eps_values"], "evaluate": typing.get_type_hints(evaluate)["eps_values"],
             "analyze": typing.get_type_hints(AnalysisRequest)["eps"], "ablate": typing.get_type_hints(AblationSettings)["eps"],
             "harden": typing.get_type_hints(HardenConfig)["eps"]}
    with_eps = {entry for entry, command in ENTRY_POINTS.items() if "eps" in {p.name for p in main.commands[command].params}}
    assert with_eps == set(stage)
    several = {entry for entry, hint in stage.items() if _takes_several(hint)}
    assert several == {"sweep", "evaluate", "ablate"}
    for entry, command in ENTRY_POINTS.items():
        params = {p.name: p for p in main.commands[command].params}
        if entry in stage:
            option = params["eps"]
            if entry in several:
                assert option.type.convert("1/255,4/255", option, None) == (Eps("1/255"), Eps("4/255"))
            else:
                assert option.type.convert("1/255", option, None) == Eps("1/255")
                with pytest.raises(Exception, match="cannot read ε from '1/255,4/255'"):
                    option.type.convert("1/255,4/255", option, None)
        # `attacks` wherever a stage takes several; only the attack stage, which takes one, says `attack`
        visible = {name for name, p in params.items() if not p.hidden}
        assert "attack" not in visible or entry == "attack"
        assert "attacks" in visible or entry in ("attack", "train", "harden")


def test_requests_hold_eps():
    from medart.attacks.difficulty import Bisection
    from medart.stages.ablation_grid import AblationSettings, DetectionProbe, LandscapeProbe
    from medart.stages.analyze import AnalysisRequest, LandscapeSettings
    from medart.stages.detect import DetectRequest

    detect = DetectRequest(eps=2 / 255, step_size=0.5 / 255)
    analysis = AnalysisRequest(eps=2 / 255, curve_eps=(4 / 255, Eps("1/255")), landscape=LandscapeSettings(radius=1 / 255))
    settings = AblationSettings(attacks=("pgd",), eps=(4 / 255, 1 / 255, 4 / 255), bisection=Bisection(eps_max=16 / 255),
                                detection=DetectionProbe(detect_eps=2 / 255), landscape=LandscapeProbe(1 / 255))
    spec = make_spec("bim", 1 / 255)
    held = [detect.eps, detect.step_size, analysis.eps, *analysis.curve_eps, analysis.landscape.landscape_max_eps,
            analysis.sharpness_radius, *settings.eps, settings.bisection.eps_max, settings.bisection.eps_tolerance,
            settings.detection.detect_eps, settings.sharpness_radius, spec.eps, spec.step_size]
    assert all(type(e) is Eps for e in held), [type(e) for e in held]
    assert analysis.curve_eps == (1 / 255, 4 / 255) and settings.eps == (1 / 255, 4 / 255)  # sorted, each once
    assert spec.step_size == 1 / 255 * (1 / 40) and str(spec.step_size) == "0.025/255"  # ε times the entry's 1/40


def test_cache_keys_are_the_ones_made_before_eps_was_typed():
    """The attack cache hashes the spec's floats: keys computed by main at 149a09e (ε a plain
    float) for the same inputs, so examples cached before are still found."""
    from medart.attacks.cache import cache_key

    indices = {"adv_train": np.arange(3), "adv_test": np.arange(2)}
    keys = {"3566eff40c8b08cf3baf5d201a1315d7": make_spec("bim", "1/255"),
            "6a7d56e845933fce80e0eb65ff098ce5": make_spec("apgd-ce", 4 / 255, 10),
            "185e3905e6d65aa516e2e54a55f8fc31": make_spec("pgd", Eps("2/255"), step_size=Eps("0.5/255")),
            "f4e4a52ea3feacf3d7ca55e83d65b102": make_spec("cw", 8 / 255, kappa=1.0, targeted=True)}
    for key, spec in keys.items():
        assert cache_key("net", {"name": "pneumonia", "md5": "x"}, indices, spec, "art", 0) == key, spec


def test_params_are_k_over_255_beside_their_floats():
    from medart.stages.ablation_grid import AblationSettings, LandscapeProbe
    from medart.stages.target import RunOptions

    assert eps_params("attack.eps", Eps("1/255")) == {"attack.eps": "1/255", "attack.eps_value": repr(1 / 255)}
    assert eps_params("eps", (Eps("1/255"), Eps("4/255"))) == {"eps": "1/255,4/255",
                                                                "eps_value": f"{1 / 255!r},{4 / 255!r}"}
    assert make_spec("pgd", "1/255").as_params() == {
        "attack.name": "pgd", "attack.eps": "1/255", "attack.eps_value": repr(1 / 255), "attack.steps": 20,
        "attack.step_size": "0.1/255", "attack.step_size_value": repr(1 / 255 * 0.1), "attack.random_start": True,
        "attack.kappa": 0.0, "attack.targeted": False}
    params = AblationSettings(landscape=LandscapeProbe(2 / 255)).as_params(RunOptions())
    assert {k: params[k] for k in ("eps", "eps_max", "eps_tolerance", "detect_eps", "radius")} == {
        "eps": "1/255,4/255", "eps_max": "32/255", "eps_tolerance": "0.25/255", "detect_eps": "1/255", "radius": "2/255"}
    assert float(params["eps_max_value"]) == 32 / 255 and float(params["radius_value"]) == 2 / 255
    # what a run logged reads back as its float: the new runs' <key>_value, or an older run's float
    assert logged_eps({"attack.eps": "1/255", "attack.eps_value": repr(1 / 255)}, "attack.eps") == 1 / 255
    assert logged_eps({"attack.eps": str(1 / 255)}, "attack.eps") == 1 / 255


@pytest.mark.filterwarnings("ignore:.*official MedMNIST MD5")
def test_runs_show_eps_as_typed(tracking_store, shared_data):
    """A sweep of an untrained small CNN on 8 real chest X-rays: its parent and the attack runs show
    ε (and the step size) as k/255, with the floats beside them."""
    from medart.models.resnet import build_model
    from medart.stages import DataSpec, RunOptions, Target, sweep

    torch.manual_seed(0)
    data = DataSpec("pneumonia", shared_data)
    model = build_model(2, "smallcnn", "none", classes=["normal", "pneumonia"]).eval()
    target = Target("smallcnn", model, data, data.load(), max_examples=8)
    out = sweep(target, ["fgsm"], [Eps("1/255"), 2 / 255], RunOptions(progress=False))
    client = mlflow.MlflowClient()
    parent = client.get_run(out.run_id).data.params
    assert (parent["eps"], parent["eps_value"]) == ("1/255,2/255", f"{1 / 255!r},{2 / 255!r}")
    assert [r.n for r in out.rows] == [8, 8] and [str(r.eps) for r in out.rows] == ["1/255", "2/255"]
    child = client.get_run(out.rows[1].run_id)
    assert child.info.run_name == "fgsm-eps2/255-art"
    p = child.data.params
    assert (p["attack.eps"], p["attack.eps_value"], p["attack.step_size"]) == ("2/255", repr(2 / 255), "2/255")
    assert float(p["attack.step_size_value"]) == 2 / 255
