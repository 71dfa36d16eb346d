"""``medart attack``."""

from __future__ import annotations

import click

from medart.attacks.specs import ATTACKS, attacks_where
from medart.cli import main, options, run_line


def _listed(test) -> str:
    return ", ".join(attacks_where(test))


@main.command()
@options.target_options
@options.run_options
@options.executor_options
@click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
              help="Attack AdvTrain and AdvTest in this many shards of whole batches, in parallel on Ray; "
                   "the examples are the same as in one piece.")
@click.option("--attack", default="bim", show_default=True, type=click.Choice(ATTACKS, case_sensitive=False),
              help=f"The main job's is bim. {options.attack_help()}")
@options.eps()
@options.steps
@options.step_size
@click.option("--random-start/--no-random-start", default=None,
              help=f"Default: on for {_listed(lambda a: 'random_start' in a.takes and a.defaults.random_start)}; off for "
                   f"{_listed(lambda a: 'random_start' in a.takes and not a.defaults.random_start)}; fixed for "
                   f"{_listed(lambda a: 'random_start' not in a.takes)}.")
@click.option("--restarts", type=click.IntRange(min=1), default=None,
              help=f"Random restarts of {_listed(lambda a: a.defaults.restarts is not None)}. "
                   "Default: 1 (AutoAttack's standard version).")
@click.option("--kappa", type=float, default=0.0, show_default=True,
              help=f"CW confidence κ ({_listed(lambda a: 'kappa' in a.takes)} only).")
@click.option("--targeted", is_flag=True,
              help=f"Aim each image at class (y+1) mod K instead of away from y ({_listed(lambda a: 'targeted' in a.takes)}).")
@options.defence_gradient
def attack(**opts) -> None:
    """Attack AdvTrain and AdvTest with one attack; log metrics and the examples to MLflow.

    Example: medart attack --model-uri models:/medart-pneumonia@champion --dataset pneumonia --attack bim --eps 1/255

    Example: medart attack --dataset pneumonia --defence jpeg:quality=75 --attack pgd --eps 4/255 --defence-gradient plain
    """
    from medart import tracking
    from medart.attacks import make_spec
    from medart.attacks.specs import check_backend
    from medart.executors import make_executor
    from medart.models.loading import ModelSource
    from medart.stages.attack import attack as run_attack
    from medart.stages.target import DataSpec, RunOptions, Target, from_options

    tracking.configure(opts["tracking_uri"])
    spec = make_spec(opts["attack"], opts["eps"], opts["steps"], opts["step_size"], opts["random_start"], opts["kappa"],
                     opts["targeted"], opts["restarts"], opts["defence_gradient"],
                     opts["eot_samples"])
    check_backend(spec.name, opts["backend"])  # before the model and data load
    with make_executor(opts["executor"], address=opts["address"], workers=opts["workers"],
                       cpus_per_task=opts["cpus_per_task"], gpus_per_task=opts["gpus_per_task"]) as executor:
        target = Target.load(from_options(ModelSource, opts), from_options(DataSpec, opts), opts["max_examples"])
        out = run_attack(target, spec, from_options(RunOptions, opts, executor=executor), opts["shards"])
    m = out.metrics
    cached = f" (examples from cache of run {out.cached_from})" if out.cached else ""
    click.echo(run_line("attack", out.run_id, f"{out.spec.label()} via {opts['backend']} on {int(m['n'])} images{cached}"))
    click.echo(f"accuracy {m['clean_acc'] * 100:.2f} % -> {m['adv_acc'] * 100:.2f} %, AUC {m['clean_auc'] * 100:.2f} % -> "
               f"{m['adv_auc'] * 100:.2f} %, success rate {m['success_rate'] * 100:.2f} %, max L∞ {m['linf_max'] * 255:.4f}/255")
