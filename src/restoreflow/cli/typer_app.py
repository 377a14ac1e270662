"""The ``restoreflow`` typer app, its ``index`` sub-app, and the callback that runs before
every verb. The verbs are added to them by the modules that define them, which
``restoreflow.cli`` imports."""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from restoreflow import __version__
from restoreflow.cli.runtime import prefect_env, start_private_server
from restoreflow.clilog import quiet_asyncio_leftovers


class OneLineGroup(TyperGroup):
    """The top-level command, whose usage errors (a bad flag or value) are one line like
    every other error of the CLI: ``error: <what>: <why> (see '<verb> --help')``, exit
    2, instead of typer's boxed usage text."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        import sys

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        except Exception as exc:
            # typer's (vendored) click errors: a usage error, a missing or bad parameter
            if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # the bare verb: its help
                exc.show()
            else:
                typer.echo(f"error: {usage_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def usage_line(exc) -> str:
    """One line for a click error: its message without click's "Invalid value for" and
    pydantic's "Value error, " wording, and where to look for the choices."""
    import re

    msg = " ".join(exc.format_message().split()).replace("Value error, ", "")
    msg = re.sub(r"^'(-[^']+)':", r"\1:", msg.removeprefix("Invalid value for ")).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    return f"{msg} (see '{ctx.command_path} --help')" if ctx is not None else msg


app = typer.Typer(
    name="restoreflow",
    cls=OneLineGroup,
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
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """restoreflow: ingest, degrade, adapt, restore, score and export images."""
    prefect_env()  # every verb, before anything imports Prefect
    start_private_server(ctx.invoked_subcommand)  # starts while the verb gets ready
    quiet_asyncio_leftovers()


index_app = typer.Typer(help="The reference index used to retrieve neighbours.",
                        no_args_is_help=True)
app.add_typer(index_app, name="index")
