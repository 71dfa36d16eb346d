"""``medart register``."""

from __future__ import annotations

import click

from medart.cli import main, options


@main.command()
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A tensor-only state_dict (torch.save(model.state_dict())) or a TorchScript file.")
@click.option("--card", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The model card (JSON): architecture, classes, input (channels, size, mean, std), penultimate; see docs/byom.md.")
@click.option("--name", required=True, help="Registered model name, e.g. my-cxr.")
@click.option("--alias", default=None, help="Point this alias (e.g. prod) at the new version.")
@options.tracking_uri
def register(**opts) -> None:
    """Register a weights file and its model card as an MLflow model that every command can load.

    The weights are checked first (they must load tensor-only, or as TorchScript, and give logits).

    Example: medart register --weights resnet18-cxr.pt --card card.json --name my-cxr --alias prod
    """
    from medart import tracking
    from medart.stages.register import register as register_model

    tracking.configure(opts["tracking_uri"])
    uri, version = register_model(opts["weights"], opts["card"], opts["name"], opts["alias"])
    alias = f", alias {opts['alias']} (models:/{opts['name']}@{opts['alias']})" if opts["alias"] else ""
    click.echo(f"registered {uri} (version {version}{alias})")
