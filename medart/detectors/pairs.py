"""What a detector is fitted and scored on: clean images paired with their adversarial versions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Pairs:
    """Clean images ``(n, C, H, W)``, their adversarial versions, their class labels ``(n,)`` and,
    for pairs of one split part, the clean images' indices in it ``(n,)``."""

    clean: torch.Tensor
    adversarial: torch.Tensor
    labels: np.ndarray
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> "Pairs":
        index = torch.from_numpy(rows)
        return Pairs(self.clean[index], self.adversarial[index], self.labels[rows],
                     None if self.indices is None else self.indices[rows])

    def xy(self) -> tuple[torch.Tensor, np.ndarray]:
        """Detector inputs (clean then adversarial) and their 0/1 labels."""
        n = len(self)
        return torch.cat([self.clean, self.adversarial]), np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
