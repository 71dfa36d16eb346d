"""MLflow pyfunc entry point for models registered from a weights file and a card (``medart register``).

Nothing is pickled: MLflow stores this file, the card and the weights (a tensor-only state_dict
or a TorchScript file), and ``mlflow.pyfunc.load_model`` / ``mlflow models serve`` rebuild the
network with :func:`medart.models.loading.load_card`. Input: float32 ``(N, 3, H, W)`` in [0, 1];
output: class probabilities ``(N, K)``.
"""

from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class CardPyfunc(PythonModel):
    def load_context(self, context):
        from medart.models.loading import ModelSource, load_card

        card = Path(context.artifacts["card"])
        self.model = load_card(card, ModelSource(str(card)))

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return torch.softmax(self.model(x), dim=1).numpy()


mlflow.models.set_model(CardPyfunc())
