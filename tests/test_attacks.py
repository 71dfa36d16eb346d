"""Attack specs and both backends on a small trained model: ε-ball, determinism, seeds, FGSM by
hand, the CW margin, backend agreement, and clear errors for bad parameters or inputs."""

from __future__ import annotations

import pytest
import torch

from medart.attacks import make_attack, make_spec, parse_names
from medart.budget import Eps
from medart.attacks.losses import CWLoss, cw_objective
from medart.errors import ConfigError, DataError

BACKENDS = ("art", "torchattacks")


@pytest.fixture(scope="module")
def model_and_data(chest_resnet18):
    """The small chest X-ray ResNet-18 (conftest: trained once a session, this module's copy) and 32 AdvTest images."""
    model, splits = chest_resnet18
    xs, ys = zip(*(splits.adv_test[i] for i in range(32)))
    return model, torch.stack(xs), torch.tensor(ys)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "cw"])
def test_eps_ball_and_pixel_range_hold(model_and_data, name, backend):
    model, x, y = model_and_data
    spec = make_spec(name, "2/255", steps=None if name == "fgsm" else 5, step_size=None if name == "fgsm" else "0.5/255")
    adv = make_attack(model, spec, 2, backend, batch_size=16).generate(x[:16], y[:16], seed=0)
    assert adv.dtype == torch.float32 and adv.shape == x[:16].shape
    assert (adv - x[:16]).abs().max() <= spec.eps + 1e-7
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv != x[:16]).any()
    assert all(p.requires_grad for p in model.parameters())  # weights unfrozen again afterwards


@pytest.mark.parametrize("backend", BACKENDS)
def test_fgsm_is_x_plus_eps_sign_gradient(model_and_data, backend):
    model, x, y = model_and_data
    eps = 1 / 255
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), y).backward()
    expected = (x + eps * xg.grad.sign()).clamp(0, 1)
    adv = make_attack(model, make_spec("fgsm", eps), 2, backend).generate(x, y)
    assert torch.allclose(adv, expected, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bim_is_deterministic_and_pgd_seeded(model_and_data, backend):
    model, x, y = model_and_data
    x, y = x[:8], y[:8]
    bim = make_attack(model, make_spec("bim", "1/255", steps=4, step_size="0.25/255"), 2, backend)
    assert torch.equal(bim.generate(x, y, seed=0), bim.generate(x, y, seed=99))
    pgd = make_attack(model, make_spec("pgd", "1/255", steps=2), 2, backend)
    a, b, c = pgd.generate(x, y, seed=1), pgd.generate(x, y, seed=1), pgd.generate(x, y, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)



@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_reproduce_one_call_random_starts_included(model_and_data, backend):
    """Shards starting at a batch boundary replay the random draws of the batches before them,
    so PGD/CW shards equal one call; without the replay they would not."""
    model, x, y = model_and_data
    x, y = x[:10], y[:10]
    for name in ("bim", "pgd", "cw"):
        attack = make_attack(model, make_spec(name, "2/255", steps=2, step_size="1/255"), 2, backend, batch_size=4)
        whole = attack.generate(x, y, seed=5)
        assert torch.equal(torch.cat([attack.generate(x[:4], y[:4], seed=5), attack.generate(x[4:], y[4:], seed=5, start=4)]), whole)
        unreplayed = attack.generate(x[4:], y[4:], seed=5)
        assert torch.equal(unreplayed, whole[4:]) == (name == "bim")
    with pytest.raises(ConfigError, match="multiple of the batch size 4"):
        attack.generate(x[6:], y[6:], start=6)

def test_backends_agree(model_and_data):
    """Same spec, same model and data: accuracies within 2 of 32 images (6.25 points); BIM and
    FGSM, which have no randomness, within 1 image (float-rounding ties in sign(∇))."""
    model, x, y = model_and_data
    for name, tolerance in (("fgsm", 1 / 32), ("bim", 1 / 32), ("pgd", 2 / 32), ("cw", 2 / 32)):
        spec = make_spec(name, "2/255", steps=None if name == "fgsm" else 10,
                         step_size=None if name == "fgsm" else "0.4/255")
        accs = [accuracy(model, make_attack(model, spec, 2, b).generate(x, y, seed=0), y) for b in BACKENDS]
        assert abs(accs[0] - accs[1]) <= tolerance + 1e-9, (name, accs)


def test_targeted_cw_moves_towards_the_target(model_and_data):
    model, x, y = model_and_data
    target = 1 - y
    spec = make_spec("cw", "8/255", steps=10, targeted=True)
    for backend in BACKENDS:
        adv = make_attack(model, spec, 2, backend).generate(x, target, seed=0)
        with torch.no_grad():
            hit = (model(adv).argmax(1) == target).float().mean().item()
            before = (model(x).argmax(1) == target).float().mean().item()
        assert hit > before + 0.25, (backend, before, hit)


def test_cw_objective_matches_the_margin_formula():
    logits = torch.tensor([[2.0, 5.0, -1.0], [-3.0, -1.0, -2.0], [2.0, 5.0, -1.0]])
    labels = torch.tensor([1, 0, 0])
    # y=1: 5 − max(2, −1) = 3;  y=0 with all-negative logits: −3 − (−1) = −2;  y=0: 2 − 5 = −3 → −κ
    assert cw_objective(logits, labels, kappa=1.0).tolist() == [3.0, -1.0, -1.0]
    assert cw_objective(logits, labels, kappa=10.0).tolist() == [3.0, -2.0, -3.0]
    # targeted at t: max(max_{j≠t} z_j − z_t, −κ)
    assert cw_objective(logits, torch.tensor([2, 1, 1]), kappa=0.5, targeted=True).tolist() == [6.0, -0.5, -0.5]
    one_hot = torch.nn.functional.one_hot(labels, 3).float()  # ART's label format
    assert CWLoss(kappa=10.0)(logits, one_hot).item() == -(3.0 - 2.0 - 3.0)


def test_paper_defaults():
    assert make_spec("bim", "1/255").steps == 40 and make_spec("bim", "1/255").step_size == pytest.approx(1 / 255 / 40)
    pgd = make_spec("pgd", "1/255")
    assert (pgd.steps, pgd.step_size, pgd.random_start) == (20, pytest.approx(1 / 2550), True)
    cw = make_spec("cw", 0.5 / 255, kappa=2)
    assert (cw.steps, cw.random_start, cw.kappa) == (20, True, 2)
    fgsm = make_spec("FGSM", "0.3/255")
    assert (fgsm.steps, fgsm.step_size, fgsm.random_start) == (1, pytest.approx(0.3 / 255), False)
    assert Eps("1/255") == 1 / 255 and Eps(0.5) == 0.5 and Eps("4e-3") == 0.004
    assert isinstance(pgd.eps, Eps) and isinstance(pgd.step_size, Eps) and str(pgd.step_size) == "0.1/255"
    assert parse_names("fgsm,BIM") == ["fgsm", "bim"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="deepfool", eps="1/255"), "unknown attack 'deepfool'; choose from: fgsm, bim, pgd, cw"),
        (dict(name="bim", eps="0"), r"ε must be in \(0, 1\]"),
        (dict(name="bim", eps="-1/255"), r"ε must be in \(0, 1\]"),
        (dict(name="bim", eps="2"), r"ε must be in \(0, 1\]"),
        (dict(name="bim", eps="one/255"), "cannot read ε from 'one/255'"),
        (dict(name="bim", eps="1/0"), "cannot read ε"),
        (dict(name="bim", eps="1/255", steps=0), "`steps` must be >= 1"),
        (dict(name="pgd", eps="1/255", step_size="2/255"), "exceeds `eps`"),
        (dict(name="fgsm", eps="1/255", steps=3), "FGSM is a single step"),
        (dict(name="pgd", eps="1/255", kappa=1.0), "`kappa` applies to the cw attack only"),
        (dict(name="cw", eps="1/255", kappa=-1.0), "`kappa` must be >= 0"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_spec(**kwargs)


def test_bad_backend_and_inputs(model_and_data):
    model, x, y = model_and_data
    spec = make_spec("fgsm", "1/255")
    with pytest.raises(ConfigError, match="unknown backend 'foolbox'"):
        make_attack(model, spec, 2, "foolbox")
    for backend in BACKENDS:
        attack = make_attack(model, spec, 2, backend)
        with pytest.raises(DataError, match=r"pixels in \[0, 1\].*do not normalise"):
            attack.generate(x * 2 - 1, y)  # normalised inputs: torchattacks would clamp them silently
        with pytest.raises(DataError, match="float32"):
            attack.generate(x.double(), y)
        with pytest.raises(DataError, match="labels must be in 0…1"):
            attack.generate(x, y + 2)
        with pytest.raises(DataError, match="NaN or Inf"):
            attack.generate(x.clone().index_fill_(0, torch.tensor([0]), float("nan")), y)
    with pytest.raises(ConfigError):
        parse_names("fgsm,zoo")
