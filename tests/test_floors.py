"""The house's floors: which module may import which, read from the code itself."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_serving_a_card_model_imports_no_stage(tmp_path):
    """``mlflow models serve`` of a registered card model runs :mod:`medart.models.card_pyfunc`:
    loading and predicting with it must not pull in the stage layer (it once did, for ModelSource)."""
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.jit.trace(network, torch.rand(1, 3, 28, 28)).save(str(tmp_path / "net.pt"))
    card = tmp_path / "medart-card.json"
    card.write_text(json.dumps({"weights": "net.pt", "classes": ["normal", "pneumonia"], "input": {"channels": 3, "size": 28}}))
    code = (
        "import json, sys, types; import numpy as np\n"
        "from medart.models.card_pyfunc import CardPyfunc\n"
        "model = CardPyfunc()\n"
        f"model.load_context(types.SimpleNamespace(artifacts={{'card': {str(card)!r}}}))\n"
        "probs = model.predict(None, np.random.default_rng(0).random((2, 3, 28, 28), dtype=np.float32))\n"
        "print(json.dumps({'sums': probs.sum(1).tolist(), 'modules': sorted(m for m in sys.modules if m.startswith('medart'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["sums"]) == 2 and all(abs(s - 1) < 1e-5 for s in out["sums"])  # it served probabilities
    assert "medart.models.card_pyfunc" in out["modules"]
    assert [m for m in out["modules"] if m.startswith("medart.stages")] == []


# Top down (benchmarks/ stands above all, outside the package): a module may import its own package
# and the floors below it, never one above (a lazy import in a function, or one for type checking
# only, counts as well: it is an arrow all the same).
FLOORS = {"mlproject": 10, "cli": 9, "stages": 8, "executors": 7, "defences": 7, "gate": 7, "attacks": 6, "analysis": 5,
          "detectors": 4, "models": 3, "tracking": 2, "render": 2, "data": 2, "catalog": 1, "errors": 1, "transforms": 1,
          "numbers": 1, "budget": 1, "results": 1, "intervals": 1, "interrupts": 1,
          "": 1}  # "": medart/__init__.py, which imports nothing (its names load on first use)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "medart").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _arrows() -> dict[str, set[str]]:
    """module → the medart modules it imports anywhere in its code."""
    modules = _modules()

    def resolve(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    arrows: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == "medart"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                if base.split(".")[0] == "medart":
                    # `from pkg import mod` imports the module mod; `from mod import name`, the module mod
                    targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        arrows[name] = {resolve(t) for t in targets} - {name}
    return arrows


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_no_arrow_runs_up_a_floor_and_no_two_packages_import_each_other():
    arrows = _arrows()
    unplaced = sorted({_unit(m) for m in arrows} - set(FLOORS))
    assert not unplaced, f"place these on a floor in FLOORS: {unplaced}"
    up = [f"{a} -> {b}" for a, targets in arrows.items() for b in targets if FLOORS[_unit(a)] < FLOORS[_unit(b)]]
    assert up == []
    units = {(_unit(a), _unit(b)) for a, targets in arrows.items() for b in targets if _unit(a) != _unit(b)}
    assert sorted((a, b) for a, b in units if (b, a) in units) == []


def test_no_import_cycles():
    """Between modules, lazy imports included. The one loop left is click's registration: the
    package face medart/cli/__init__.py defines the `medart` group and imports each command's
    module, whose decorator adds the command to that group."""
    arrows = _arrows()
    commands = {m for m in arrows if m.startswith("medart.cli.")}
    arrows["medart.cli"] -= commands  # the face's registration imports, read as described above
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan: strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in arrows[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in arrows:
        if module not in index:
            visit(module)
    assert cycles == []


def _definitions() -> list[tuple[str, ast.AST]]:
    return [(f"{path.relative_to(ROOT)}:{node.name}", node) for path in _modules().values()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def test_no_function_outside_the_command_line_takes_more_than_12_parameters():
    """A function takes a few typed objects, not a long list; the click commands (medart/cli/)
    spell every parameter as a flag and are left out."""
    wide = {}
    for where, node in _definitions():
        if isinstance(node, ast.ClassDef) or where.startswith("medart/cli/"):
            continue
        a = node.args
        names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [p.arg for p in (a.vararg, a.kwarg) if p]
        n = len(names) - (names[:1] in (["self"], ["cls"]))
        if n > 12:
            wide[where] = n
    assert wide == {}


# Dataclasses wider than 12 fields, and why. Records of results hold one field per number they
# measured (logged under its name); a request holds what it needs, grouped.
WIDE = {
    "CellMetrics": "a result record: one field per number a finished ablation cell measured (cell.json)",
    "SweepRow": "a result record: one field per number of one attack at one ε of a sweep",
    "TrainConfig": "the training recipe, 14 knobs of fit, each a `medart train` option and a train.* param; its four "
                   "augmentation knobs are a group still to make (TrainConfig(augment=False) is spelled by the shared "
                   "test fixtures that other branches build on)",
}


def test_dataclasses_hold_at_most_12_fields_or_say_why():
    fields = {}
    for where, node in _definitions():
        if isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list):
            fields[node.name] = (where, sum(isinstance(s, ast.AnnAssign) for s in node.body))
    wide = {name: n for name, (_, n) in fields.items() if n > 12}
    assert sorted(wide) == sorted(WIDE), wide  # a new wide one says why here; a narrowed one leaves the list
