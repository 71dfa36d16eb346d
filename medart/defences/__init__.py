"""Defences: robust training through ART's trainers (:mod:`medart.defences.training`) and the
formats a fine-tuned copy is stored in (:mod:`medart.defences.copies`). The stage that logs and
registers a hardened model is :mod:`medart.stages.harden`; the registry gate that decides whether
it replaces the champion is :mod:`medart.gate`.
Preprocessing defences wrap a model (ART's preprocessors in front of it) and so live with the
models, a floor below the attacks that go through them: :mod:`medart.models.defended`."""
