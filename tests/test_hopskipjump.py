"""HopSkipJump: ART's label-only black box at L∞ — it lowers the small CNN's accuracy on real chest
X-rays at 8/255 within its CPU-sized default budget, leaves the images the model gets wrong as they
are, gives the same examples for the same seed, and torchattacks, which has no HopSkipJump,
refuses it in one line."""

from __future__ import annotations


import pytest
import torch
from click.testing import CliRunner

from medart.attacks import make_attack, make_spec
from medart.cli import main
from medart.data import subsample


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@pytest.fixture(scope="module")
def small_cnn(chest_small_cnn):
    """The small CNN trained briefly (one thread) on the real chest X-rays at 28 px, and 8 AdvTest images."""
    model, splits = chest_small_cnn
    test = subsample(splits.adv_test, 32, 0)
    xs, ys = zip(*(test[i] for i in range(8)))
    return model, torch.stack(xs), torch.tensor(ys)


@pytest.mark.slow
def test_hopskipjump_lowers_the_small_cnns_accuracy_at_8_of_255(small_cnn):
    model, x, y = small_cnn
    spec = make_spec("hopskipjump", "8/255")
    assert (spec.steps, spec.step_size, spec.random_start, spec.restarts) == (20, None, True, None)
    adv = make_attack(model, spec, 2, "art", batch_size=8).generate(x, y, seed=0)
    assert (adv - x).abs().max() <= spec.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    before, after = accuracy(model, x, y), accuracy(model, adv, y)
    assert after <= before - 2 / 8, (before, after)  # measured: 8/8 → 5/8


def test_hopskipjump_leaves_wrong_images_alone_and_torchattacks_refuses_it(small_cnn, tracking_store, shared_data):
    model, x, y = small_cnn
    y = y.clone()
    y[:2] = 1 - y[:2]  # two images the model now gets wrong
    attack = make_attack(model, make_spec("hopskipjump", "8/255", steps=1), 2, "art", batch_size=8)
    adv = attack.generate(x, y, seed=0)
    assert torch.equal(adv[:2], x[:2]) and not torch.equal(adv[2:], x[2:])
    assert torch.equal(attack.generate(x, y, seed=0), adv)  # its starting points come from the run's seed
    done = CliRunner().invoke(main, ["attack", "--attack", "hopskipjump", "--backend", "torchattacks", "--model-uri",
                                     "no-such-model.pt", "--dataset", "pneumonia", "--data-dir", str(shared_data),
                                     "--tracking-uri", tracking_store])
    assert (done.exit_code, done.output) == (
        2, "Error: torchattacks has no HopSkipJump attack; use --backend='art' for hopskipjump\n")
