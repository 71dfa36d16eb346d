"""AutoAttack's standard version (Croce & Hein 2020) as one attack: its parts in order, each on the
images the earlier ones left correctly classified, so each image gets the first part that breaks
it — the per-image worst case over the parts at a fraction of their summed cost.

The sequence is medart's, the parts are the libraries': neither library's own ``AutoAttack``
runs the standard version as published (see the backends), and one sequencer for both makes the
two backends differ only in their parts — torchattacks has all four, ART has no FAB.
"""

from __future__ import annotations

from typing import Sequence

import torch

from medart.attacks.base import AttackBackend, project
from medart.attacks.specs import AttackSpec


class AutoAttackSequence(AttackBackend):
    """Runs ``parts`` (backends of AutoAttack's parts, in order) as the ``autoattack`` ``spec``.

    Part k sees only the images no earlier part broke, as in fra31/auto-attack's
    ``run_standard_evaluation``; an image no part breaks is returned as its clean self. The first
    part sees exactly what it sees when run alone, so ``autoattack`` breaks every image it
    breaks alone; a later part's random draws fall on fewer images than when it runs alone, so
    it may break a few others.

    ``breaks`` counts, over every :meth:`generate` call of this object, the images each part
    broke first (part name → count; their sum is the images correct before and wrong after).
    """

    def __init__(self, spec: AttackSpec, parts: Sequence[AttackBackend]) -> None:
        first = parts[0]
        super().__init__(first.model, spec, first.num_classes, first.batch_size, str(first.device))
        self.parts, self.name = list(parts), first.name
        self.breaks = {part.spec.name: 0 for part in self.parts}

    def metrics(self) -> dict[str, float]:
        """``broken_by.<part>``: the images each part broke first, as :attr:`breaks` counts them."""
        return {f"broken_by.{name}": float(count) for name, count in self.breaks.items()}

    def _generate_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        adv = x.clone()
        with torch.no_grad():
            left = (self.model(x).argmax(dim=1) == y).nonzero().squeeze(1)
        for part in self.parts:
            if not left.numel():
                break
            out = project(part._generate_batch(x[left], y[left]), x[left], part.spec.eps)
            with torch.no_grad():
                broken = self.model(out).argmax(dim=1) != y[left]
            adv[left[broken]] = out[broken]
            self.breaks[part.spec.name] += int(broken.sum())
            left = left[~broken]
        return adv

    def _draw_random_start(self, shape: torch.Size) -> None:
        """Never called: AutoAttack's parts are reseeded per batch."""
