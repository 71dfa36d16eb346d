"""The house's floors: which module may import which, read from the code itself."""

from __future__ import annotations

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
