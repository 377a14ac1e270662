"""The ``restoreflow`` command line (typer). Every verb calls a flow or a core function.

Heavy libraries are imported inside the commands so that ``restoreflow --help`` is fast.
"""

from __future__ import annotations

import typer

from restoreflow import __version__

app = typer.Typer(
    name="restoreflow",
    help="Restore image collections with adapted diffusion priors and conformal guarantees.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"restoreflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """restoreflow: ingest, degrade, adapt, restore, score and export images."""


# --- commands are added below, one block per verb ---------------------------------


@app.command("train-prior")
def train_prior_cmd(
    out: str = typer.Option(..., "--out", help="Output directory (checkpoints, log, prior/)"),
    steps: int = typer.Option(16000, min=1, help="Optimiser steps"),
    batch_size: int = typer.Option(16, min=1, help="Crops per step"),
    device: str = typer.Option(None, help="torch device (default: settings.device)"),
    max_minutes: float = typer.Option(None, help="Stop after this many minutes"),
    images: list[str] = typer.Option(None, "--image", help="Training images (default: corpus)"),
) -> None:
    """Train (or resume) the default diffusion prior; writes OUT/prior in diffusers format."""
    from restoreflow.flows.train_prior import train_prior_flow
    from restoreflow.settings import get_settings

    path = train_prior_flow(out_dir=out, steps=steps, batch_size=batch_size,
                            device=device or get_settings().resolved_device(),
                            max_minutes=max_minutes, images=images or None)
    typer.echo(f"prior written to {path}")


if __name__ == "__main__":
    app()
