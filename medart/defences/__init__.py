"""Defences against adversarial examples. Preprocessing defences (:mod:`medart.defences.specs`,
torch-free; :mod:`medart.defences.preprocessing`, the defended model and the gradients attacks
take through it) put ART's input transformations in front of any medart model."""
