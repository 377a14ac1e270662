"""The ``restoreflow`` typer app, its ``index`` sub-app, and the callback that runs before
every verb. The verbs are added to them by the modules that define them, which
``restoreflow.cli`` imports."""

from __future__ import annotations

import typer

from restoreflow import __version__
from restoreflow.cli.runtime import prefect_env
from restoreflow.clilog import quiet_asyncio_leftovers

app = typer.Typer(
    name="restoreflow",
    help="Restore image collections with pretrained priors and conformal guarantees.",
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
    prefect_env()  # every verb, before anything imports Prefect
    quiet_asyncio_leftovers()


index_app = typer.Typer(help="The reference index used to retrieve neighbours.",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")
