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


if __name__ == "__main__":
    app()
