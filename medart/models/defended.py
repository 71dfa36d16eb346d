"""A model behind preprocessing defences, and the gradients attacks take through it.

:class:`DefendedClassifier` runs ART's preprocessors (``art.defences.preprocessor``) on medart's
pixels, float32 ``(N, 3, S, S)`` in [0, 1], before the model — before the model's own input
contract too, so a defence always sees the three-channel image (JPEG compresses it in RGB, where a
grey image stays grey) whatever channels the network takes — and presents the interface of any
medart model (``config``, ``classes``, feature taps, ``dfeat``, stages): both attack backends,
the detectors, evaluation and the analyses take it unchanged.

Gradients. JPEG and bit-depth squeezing round the pixels to 8 or fewer bits, so their own
derivative is zero almost everywhere; the median filter's passes each output pixel's gradient to
the input pixel that is its window's median; added noise's is one wherever the noisy pixel was
not clipped. A **plain** attack differentiates the defended model as it is, through these
derivatives — for JPEG and squeezing a zero gradient, the masking a plain attack is blind to.
**BPDA** (Athalye et al. 2018) replaces each preprocessor's backward pass by ART's own estimate,
its ``estimate_gradient`` (the identity for all four), exactly as ART's ``PyTorchClassifier``
with ``preprocessing_defences`` computes ``loss_gradient``. A randomized defence is attacked with
BPDA and **EOT**: each forward pass averages the logits of k noise draws, so the gradient an attack
takes is the average of the k draws' gradients (of its loss at the averaged logits).

An attack picks through its spec (``defence_gradient``, ``eot_samples``; :func:`attack_spec`
fills the defaults: BPDA, and EOT over :data:`~medart.models.defence_specs.EOT_SAMPLES` draws for a
randomized defence) while it generates (:func:`attacking`); outside attacks the model
differentiates plainly (saliency, the checklist's vanishing-gradient check) and predicts with one
draw.

Noise is drawn per image from a generator seeded by the image's bytes, the draw's index and
whether an attack or a prediction draws: a prediction is a function of the image — as
reproducible as any, so a cached example scores the same again — while an attack never sees the
draws its examples are scored with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from medart.models.defence_specs import EOT_SAMPLES, JOIN, DefenceSpec, parse_defences
from medart.errors import ConfigError, MedartError, ModelError
from medart.models.adapter import INPUT, LOGITS, PENULTIMATE, PROBE_SIDE, _Through, tap_hooks

JPEG_MAX_SIDE = 65500  # PIL's largest JPEG side (the format stores sides in 16 bits)
PREDICT, ATTACK = b"predict", b"attack"  # who draws the noise: disjoint streams
CLIP = (0.0, 1.0)

# an attack's spec (medart.attacks.specs.AttackSpec, a floor above: named here by what is read of it,
# the dataclass fields ``defence_gradient`` and ``eot_samples``)
Spec = TypeVar("Spec")


class _Defend(torch.autograd.Function):
    """One preprocessor: forward in ART (NumPy); backward plain or BPDA, as the caller says."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "Preprocessor", draw: int, salt: bytes, gradient: str) -> torch.Tensor:
        out = layer.transform(x, draw, salt)
        ctx.layer, ctx.gradient = layer, gradient
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, out = ctx.saved_tensors
        layer = ctx.layer
        return (layer.bpda(x, grad) if ctx.gradient == "bpda" else layer.plain(x, out, grad)), None, None, None, None


class Preprocessor(nn.Module):
    """One defence as a layer (no weights): ``transform`` is ART's preprocessor, run on the CPU;
    ``plain`` the transform's own derivative (here: zero, the rounding defences'); ``bpda`` ART's
    ``estimate_gradient``. ``text`` is the canonical defence (``jpeg:quality=75``)."""

    def __init__(self, spec: DefenceSpec) -> None:
        super().__init__()
        self.spec, self.text = spec, str(spec)
        self.art = self._art()

    def _art(self):
        raise NotImplementedError

    def forward(self, x: torch.Tensor, draw: int = 0, salt: bytes = PREDICT, gradient: str = "plain") -> torch.Tensor:
        return _Defend.apply(x, self, draw, salt, gradient)

    def transform(self, x: torch.Tensor, draw: int, salt: bytes) -> torch.Tensor:
        out, _ = self.art(x.detach().cpu().numpy())
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    def plain(self, x: torch.Tensor, out: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(grad)

    def bpda(self, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        estimate = self.art.estimate_gradient(x.detach().cpu().numpy(), grad.detach().cpu().numpy())
        return torch.from_numpy(np.asarray(estimate, dtype=np.float32)).to(grad.device)

    def misfit(self, side: int) -> str | None:
        """Why this defence cannot run on ``side``-px images, or ``None``."""
        return None


class Jpeg(Preprocessor):
    """ART's ``JpegCompression``: the image as 8-bit JPEG at ``quality``, decoded again."""

    def _art(self):
        from art.defences.preprocessor import JpegCompression

        return JpegCompression(clip_values=CLIP, quality=int(self.spec["quality"]), channels_first=True)

    def misfit(self, side: int) -> str | None:
        return f"JPEG takes images of at most {JPEG_MAX_SIDE} px a side" if side > JPEG_MAX_SIDE else None


class Squeeze(Preprocessor):
    """ART's ``FeatureSqueezing``: each pixel rounded to ``bits`` bits."""

    def _art(self):
        from art.defences.preprocessor import FeatureSqueezing

        return FeatureSqueezing(clip_values=CLIP, bit_depth=int(self.spec["bits"]))


class Smooth(Preprocessor):
    """ART's ``SpatialSmoothing``: the median of each ``window`` × ``window`` neighbourhood of a
    channel (SciPy's ``median_filter``, edges mirrored); its plain gradient is the median's."""

    def _art(self):
        from art.defences.preprocessor import SpatialSmoothing

        return SpatialSmoothing(window_size=int(self.spec["window"]), channels_first=True, clip_values=CLIP)

    def median(self, x: torch.Tensor) -> torch.Tensor:
        """The same filter in torch, so autograd passes each output pixel's gradient to the pixel
        chosen as its median: SciPy's window (``w // 2`` before the pixel), its ``mode="reflect"``
        edges (NumPy's ``symmetric``) and its rank (``w² // 2``, also for even windows)."""
        w = int(self.spec["window"])
        pad = (w // 2, w - 1 - w // 2)
        rows, cols = (torch.from_numpy(np.pad(np.arange(n), pad, mode="symmetric")).to(x.device) for n in x.shape[-2:])
        windows = x[..., rows, :][..., cols].unfold(-2, w, 1).unfold(-2, w, 1)  # (N, C, H, W, w, w)
        return windows.flatten(-2).kthvalue(w * w // 2 + 1, dim=-1).values

    def plain(self, x: torch.Tensor, out: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            return torch.autograd.grad(self.median(leaf), leaf, grad)[0]

    def misfit(self, side: int) -> str | None:
        window = int(self.spec["window"])
        return f"its {window}-px window is wider than the {side}-px images" if window > side else None


class Noise(Preprocessor):
    """Gaussian noise of ``sigma`` added and clipped to [0, 1], as ART's ``GaussianAugmentation``
    adds it with ``augmentation=False``; drawn per image (see the module's note), so the noisy
    image is reproducible. Its plain gradient is one where the noisy pixel was not clipped."""

    def _art(self):
        from art.defences.preprocessor import GaussianAugmentation

        return GaussianAugmentation(sigma=float(self.spec["sigma"]), augmentation=False, apply_fit=False,
                                    apply_predict=True, clip_values=CLIP)

    def transform(self, x: torch.Tensor, draw: int, salt: bytes) -> torch.Tensor:
        images = x.detach().cpu().contiguous()
        noise = torch.stack([torch.randn(image.shape, generator=_generator(image, draw, salt)) for image in images])
        return (images + float(self.spec["sigma"]) * noise).clamp_(*CLIP).to(x.device)

    def plain(self, x: torch.Tensor, out: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad * ((out > CLIP[0]) & (out < CLIP[1]))


def _generator(image: torch.Tensor, draw: int, salt: bytes) -> torch.Generator:
    digest = hashlib.blake2b(image.numpy().tobytes() + salt + draw.to_bytes(4, "little"), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


LAYERS: dict[str, type[Preprocessor]] = {"jpeg": Jpeg, "squeeze": Squeeze, "smooth": Smooth, "noise": Noise}


class DefendedClassifier(nn.Module):
    """``model`` (a medart model: ``MedResNet`` or ``AdaptedClassifier``) behind ``defences``,
    applied in order to its input pixels, float32 ``(N, 3, S, S)`` in [0, 1]; logits ``(N, K)`` out.

    Args:
        model: the classifier; its penultimate features are routed through this model's own
            ``dfeat`` (a top-level layer, which ART's activation detector needs).
        defences: :class:`~medart.models.defence_specs.DefenceSpec` objects or their text
            (``jpeg:quality=75``; ``+`` stacks).
        side: the input side (px) when the model does not store one (``config["image_size"]``).

    A defence that does not fit the model — its window wider than the images, a side JPEG cannot
    take, or one that fails on a probe batch — is a one-line :class:`~medart.errors.ModelError`.
    ``config`` is the model's plus ``defence``, the canonical stack (``squeeze:bits=4+jpeg:quality=75``).
    """

    def __init__(self, model: nn.Module, defences: Sequence[DefenceSpec | str], side: int | None = None) -> None:
        super().__init__()
        specs = parse_defences([str(d) for d in defences])
        if not specs:
            raise ConfigError("no defence given; name one, e.g. jpeg:quality=75")
        self.model = model
        self.defences = nn.ModuleList(LAYERS[spec.name](spec) for spec in specs)
        self.dfeat = nn.Identity()
        self.train(model.training)  # the model's mode, which the probe below restores
        self.text = JOIN.join(layer.text for layer in self.defences)
        # what an attack set (see `attacking`): the backward pass, the draws averaged, whose draws
        self._gradient, self._samples, self._salt = "plain", 1, PREDICT
        side = model.config.get("image_size") or side
        for layer in self.defences:
            why = layer.misfit(side) if side else None
            if why:
                raise ModelError(f"defence {layer.text} does not fit {model.config['arch']}: {why}; change the defence "
                                 "or the model's `input_size`")
        self._routed = self._route_penultimate()
        self._probe(side or PROBE_SIDE)

    @property
    def randomized(self) -> bool:
        """Whether a defence draws anew each pass (attacks then average over draws: EOT)."""
        return any(layer.spec.randomized for layer in self.defences)

    # -- medart's model interface, the model's own but for the defence ------------------------

    @property
    def config(self) -> dict:
        """The model's ``config`` (a copy) with ``defence``: the canonical stack."""
        return {**self.model.config, "defence": self.text}

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    @property
    def head(self) -> nn.Module:
        """The model's head, for the detectors that run it on ``dfeat`` (BU); an
        ``AttributeError`` for a model without one, as for any such model."""
        return self.model.head

    def name_classes(self, names: Sequence[str]) -> None:
        self.model.name_classes(names)

    def tap_names(self) -> list[str]:
        return self.model.tap_names()

    def stage_taps(self) -> list[str]:
        return self.model.stage_taps()

    def layer_for(self, tap: str) -> tuple[nn.Module, str]:
        """The model's layers; ``dfeat`` passes through this model's own identity layer and
        ``logits`` are this model's output (under EOT, the average over draws)."""
        if tap == PENULTIMATE and self._routed:
            return self.dfeat, "output"
        if tap == LOGITS:
            return self, "output"
        return self.model.layer_for(tap)

    def features(self, x: torch.Tensor, taps: Sequence[str] = (PENULTIMATE,)) -> dict[str, torch.Tensor]:
        """The named taps of a batch ``x`` ``(N, 3, S, S)`` in [0, 1], computed on the defended
        pixels; ``input`` is ``x`` itself, before the defence."""
        store: dict[str, list] = {}
        with tap_hooks(self, taps, store):
            self(x)
        return {t: x if t == INPUT else torch.cat(store[t]) for t in taps}

    def defend(self, x: torch.Tensor, draw: int = 0) -> torch.Tensor:
        """``x`` through every defence, in order (draw ``draw`` of the randomized ones)."""
        for layer in self.defences:
            x = layer(x, draw, self._salt, self._gradient)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._samples == 1:
            return self.model(self.defend(x))
        return torch.stack([self.model(self.defend(x, draw)) for draw in range(self._samples)]).mean(dim=0)

    def _route_penultimate(self) -> bool:
        try:
            module, where = self.model.layer_for(PENULTIMATE)
        except MedartError:  # a network without one: asking for dfeat stays the model's own error
            return False
        hook = _Through(self.dfeat)
        module.register_forward_pre_hook(hook) if where == "input" else module.register_forward_hook(hook)
        return True

    def _probe(self, side: int) -> None:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self(torch.full((2, 3, side, side), 0.5))
        except Exception as exc:  # noqa: BLE001 - whatever ART or the network raises, the user gets one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"defence {self.text} fails in front of {self.model.config['arch']} on {side}-px images "
                             f"({type(exc).__name__}: {first[:200]})") from exc
        finally:
            self.train(was_training)


def defended(model: nn.Module) -> list[DefendedClassifier]:
    """The defended models in ``model`` (itself, or inside it: an adaptive attack's head)."""
    return [m for m in model.modules() if isinstance(m, DefendedClassifier)] if isinstance(model, nn.Module) else []


def attack_spec(spec: Spec, model: nn.Module) -> Spec:
    """``spec`` with its defence gradient for ``model``: for a defended model, ``bpda`` unless it
    says ``plain``, and for a randomized defence under BPDA ``eot_samples`` (default
    :data:`~medart.models.defence_specs.EOT_SAMPLES`); a one-line error for settings that do not apply."""
    found = defended(model)
    if not found:
        if spec.defence_gradient is not None or spec.eot_samples is not None:
            raise ConfigError("`defence_gradient` and `eot_samples` apply to a model behind a preprocessing defence; "
                              "give it one with `defence` (e.g. jpeg:quality=75) or drop them")
        return spec
    gradient = spec.defence_gradient or "bpda"
    randomized = any(m.randomized for m in found)
    if spec.eot_samples is not None and (gradient == "plain" or not randomized):
        why = "the plain attack takes one draw" if gradient == "plain" else f"{found[0].text} is deterministic"
        raise ConfigError(f"`eot_samples` averages a randomized defence (noise) under BPDA; {why}: drop `eot_samples`")
    samples = (spec.eot_samples or EOT_SAMPLES) if gradient == "bpda" and randomized else None
    return dataclasses.replace(spec, defence_gradient=gradient, eot_samples=samples)


@contextlib.contextmanager
def attacking(model: nn.Module, spec: Spec) -> Iterator[Spec]:
    """While open, every defended model in ``model`` differentiates as ``spec`` says
    (:func:`attack_spec`), averages its EOT draws, and draws the attack's noise, not the
    predictions'; restored afterwards. Yields the spec with its defence gradient."""
    spec = attack_spec(spec, model)
    found = defended(model)
    samples = spec.eot_samples or 1
    if samples > 1 and found != [model]:
        raise ConfigError("EOT averages the logits of a randomized defence over draws, but a detector-aware attack reads "
                          "the features of each draw; attack a noise defence with `medart attack` or `evaluate`")
    before = [(m._gradient, m._samples, m._salt) for m in found]
    for m in found:
        m._gradient, m._samples, m._salt = spec.defence_gradient, samples, ATTACK
    try:
        yield spec
    finally:
        for m, state in zip(found, before):
            m._gradient, m._samples, m._salt = state
