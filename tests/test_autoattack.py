"""AutoAttack and its parts (APGD-CE, APGD-DLR, FAB, Square) through both backends, and the
evaluation checklist: ε-ball and pixel range, the DLR loss by hand, the backends' agreement,
AutoAttack against its parts, and the checklist on a normal and a gradient-masked model.

Budgets are tiny (a few steps, tens of queries) so the file runs in seconds; the measured,
full-budget numbers are in docs/models-and-attacks.md."""

from __future__ import annotations


import pytest
import torch

from medart.attacks import make_attack, make_spec, part_specs
from medart.attacks.checklist import ChecklistPlan, direct_accuracy, run_checklist, vanishing_share
from medart.attacks.losses import DLRLoss, dlr_objective, encode_targets
from medart.data import subsample
from medart.errors import ConfigError
from medart.render.checks import checklist_table

BACKENDS = ("art", "torchattacks")
EPS = 2 / 255
PARTS = ("apgd-ce", "apgd-dlr", "fab", "square")


def small(name: str):
    """A spec with a test-sized budget: 2 steps, and Square the 100 queries ``autoattack`` gives it at 2 steps."""
    return make_spec(name, EPS, 100 if name == "square" else 2)


@pytest.fixture(scope="module")
def model_and_data(chest_small_cnn):
    """The repo's small CNN trained briefly on the real chest X-rays (28 px), and 32 AdvTest images."""
    model, splits = chest_small_cnn
    test = subsample(splits.adv_test, 32, 0)
    xs, ys = zip(*(test[i] for i in range(len(test))))
    return model, torch.stack(xs), torch.tensor(ys)


@pytest.fixture(scope="module")
def adversarial(model_and_data):
    """(backend, attack) → examples on the 32 images: each part alone, and AutoAttack."""
    model, x, y = model_and_data
    out = {}
    for backend in BACKENDS:
        for name in (*PARTS, "autoattack"):
            if (backend, name) != ("art", "fab"):
                out[backend, name] = make_attack(model, small(name), 2, backend, batch_size=16).generate(x, y, seed=0)
    return out


def correct(model, x, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1) == y


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_attacks_stay_in_the_eps_ball_and_pixel_range(model_and_data, adversarial, backend):
    model, x, y = model_and_data
    for (b, name), adv in adversarial.items():
        if b == backend:
            assert adv.dtype == torch.float32 and adv.shape == x.shape
            assert (adv - x).abs().max() <= EPS + 1e-7, name
            assert adv.min() >= 0 and adv.max() <= 1, name
            assert correct(model, adv, y).sum() < correct(model, x, y).sum(), name  # each breaks some image
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("classes", [3, 4])
def test_dlr_and_fab_with_more_classes(classes):
    """K = 3: untargeted DLR; K = 4: APGD-T over the 3 other classes (both backends), FAB-T; on a
    random linear model whose own predictions are the labels."""
    torch.manual_seed(classes)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, classes)).eval()
    x = torch.rand(12, 3, 28, 28)
    y = model(x).argmax(dim=1).detach()
    for backend, name in (("art", "apgd-dlr"), ("torchattacks", "apgd-dlr"), ("torchattacks", "fab")):
        adv = make_attack(model, small(name), classes, backend).generate(x, y, seed=0)
        assert (adv - x).abs().max() <= EPS + 1e-7 and adv.min() >= 0 and adv.max() <= 1
        assert correct(model, adv, y).float().mean() < 0.75, (backend, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_and_sharded_like_one_call(backend):
    """AutoAttack's parts reseed every batch: the same seed gives the same examples, and shards
    starting at a batch boundary give what one call gives, with no replay of earlier draws."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 2)).eval()
    x = torch.rand(10, 3, 28, 28)
    y = model(x).argmax(dim=1).detach()
    attack = make_attack(model, small("autoattack"), 2, backend, batch_size=4)
    whole = attack.generate(x, y, seed=3)
    assert torch.equal(attack.generate(x, y, seed=3), whole)
    assert torch.equal(torch.cat([attack.generate(x[:4], y[:4], seed=3), attack.generate(x[4:], y[4:], seed=3, start=4)]), whole)


def test_dlr_loss_by_hand():
    logits = torch.tensor([[5.0, 2.0, 1.0, -1.0], [1.0, 4.0, 3.0, 0.0]])
    y = torch.tensor([0, 2])
    # untargeted: −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3): −(5 − 2)/(5 − 1), −(3 − 4)/(4 − 1)
    assert torch.allclose(dlr_objective(logits, y), torch.tensor([-3 / 4, 1 / 3]))
    # targeted at t: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2): −(5 − 1)/(5 − 0), −(3 − 0)/(4 − 0.5)
    t = torch.tensor([2, 3])
    assert torch.allclose(dlr_objective(logits, y, t), torch.tensor([-4 / 5, -3 / 3.5]))
    # two classes: the margin alone, where DLR's denominator would need a third logit
    assert torch.allclose(dlr_objective(logits[:, :2], torch.tensor([0, 0])), torch.tensor([-3.0, 3.0]))
    # ART hands the loss one-hot rows; a target rides along at 0.5
    loss = DLRLoss(reduction="none")
    assert torch.allclose(loss(logits, encode_targets(y, t, 4)), dlr_objective(logits, y, t))
    assert torch.allclose(loss(logits, torch.nn.functional.one_hot(y, 4).float()), dlr_objective(logits, y))
    with pytest.raises(ValueError, match=">= 4 classes"):
        dlr_objective(logits[:, :3], y, t)


def test_backends_agree_on_autoattack(model_and_data, adversarial):
    """Within 3 of 32 images: the parts draw their random starts from different generators
    (NumPy in ART, torch in torchattacks), ART's APGD keeps its last iterate where torchattacks'
    keeps any that broke the image, ART's Square tries one square position for the whole batch
    per query where torchattacks' tries one per image, and ART has no FAB."""
    model, x, y = model_and_data
    accs = [correct(model, adversarial[b, "autoattack"], y).float().mean().item() for b in BACKENDS]
    assert abs(accs[0] - accs[1]) <= 3 / 32 + 1e-9, accs


@pytest.mark.parametrize("backend", BACKENDS)
def test_autoattack_is_never_weaker_than_its_parts(model_and_data, adversarial, backend):
    model, x, y = model_and_data
    auto = correct(model, adversarial[backend, "autoattack"], y)
    for name in PARTS:
        if (backend, name) in adversarial:
            assert auto.sum() <= correct(model, adversarial[backend, name], y).sum(), name
    # APGD-CE runs first on the same images and draws: every image it breaks alone, AutoAttack breaks
    assert not (auto & ~correct(model, adversarial[backend, "apgd-ce"], y)).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_autoattack_counts_which_part_broke_each_image(model_and_data, adversarial, backend):
    model, x, y = model_and_data
    attack = make_attack(model, small("autoattack"), 2, backend, batch_size=16)
    adv = torch.cat([attack.generate(x[:16], y[:16]), attack.generate(x[16:], y[16:], start=16)])  # counts add up over calls
    assert list(attack.breaks) == ["apgd-ce", "apgd-dlr", *(["fab"] if backend == "torchattacks" else []), "square"]
    clean = correct(model, x, y)
    assert sum(attack.breaks.values()) == clean.sum() - correct(model, adv, y).sum() > 0
    assert attack.breaks["apgd-ce"] == (clean & ~correct(model, adversarial[backend, "apgd-ce"], y)).sum()
    assert attack.metrics() == {f"broken_by.{name}": float(n) for name, n in attack.breaks.items()}


def test_specs_defaults_and_errors():
    assert make_spec("apgd-ce", "1/255").steps == 100 and make_spec("square", "1/255").steps == 5000
    auto = make_spec("autoattack", "8/255", steps=4, restarts=2)
    assert [(p.name, p.steps, p.restarts) for p in part_specs(auto)] == [
        ("apgd-ce", 4, 2), ("apgd-dlr", 4, 2), ("fab", 4, 2), ("square", 200, 2)]
    assert "attack.restarts" not in make_spec("pgd", "1/255").as_params()  # paper runs' params and cache keys as before
    for kwargs, message in ((dict(name="apgd-ce", step_size="1/255"), "own step size"),
                            (dict(name="fab", targeted=True), "untargeted"),
                            (dict(name="pgd", restarts=2), "`restarts` applies"),
                            (dict(name="square", restarts=0), "`restarts` must be >= 1"),
                            (dict(name="fab", random_start=True), "always starts from x")):
        with pytest.raises(ConfigError, match=message):
            make_spec(eps="1/255", **kwargs)
    with pytest.raises(ConfigError, match="ART has no FAB"):
        make_attack(torch.nn.Flatten(), make_spec("fab", "1/255"), 2, "art")


class Rounded(torch.nn.Module):
    """Gradient masking by construction: the input is rounded to 16 grey levels, whose gradient is zero."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 15) / 15)


def test_checklist_passes_on_the_model_and_fails_on_its_masked_twin(model_and_data):
    model, x, y = model_and_data
    pick = torch.cat([(y == k).nonzero().squeeze(1)[:8] for k in (0, 1)])  # both classes: noise cannot be right for all
    x, y = x[pick], y[pick]
    plan = ChecklistPlan((EPS,), steps=2, queries=50)
    results = {}
    for name, net in (("normal", model), ("rounded", Rounded(model).eval())):
        results[name] = run_checklist(plan, direct_accuracy(net, x, y, 2, "torchattacks"), vanishing_share(net, x, y), len(y))
    assert all(r.passed for r in results["normal"]), checklist_table(results["normal"])
    failed = {r.check: r.suggests for r in results["rounded"] if not r.passed}
    assert {"unbounded_eps", "no_vanishing_gradients"} <= set(failed), checklist_table(results["rounded"])
    assert all("gradient masking" in why for why in failed.values())
    table = checklist_table(results["rounded"])
    assert "**FAIL**" in table and f"{len(failed)} of 6 checks fail" in table
