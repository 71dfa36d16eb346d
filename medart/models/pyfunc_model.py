"""MLflow pyfunc entry point for medart models, logged as "models from code".

Nothing is pickled: MLflow stores this file, the tensor-only weights and the JSON architecture,
so ``mlflow.pyfunc.load_model`` / ``mlflow models serve`` rebuild the network from source.
Input: float32 ``(N, 3, H, W)`` in [0, 1]; output: class probabilities ``(N, K)``.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class MedartPyfunc(PythonModel):
    def load_context(self, context):
        from medart.models.registry import load_files

        self.model = load_files(context.artifacts["config"], context.artifacts["weights"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return torch.softmax(self.model(x), dim=1).numpy()


mlflow.models.set_model(MedartPyfunc())
