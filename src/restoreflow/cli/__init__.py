"""The ``restoreflow`` command line (typer). Every verb calls a flow or a core function.

Heavy libraries are imported inside the commands so that ``restoreflow --help`` is fast.
The app is defined in ``typer_app``; importing the verb modules here adds their commands
to it, and the order of these imports is the order ``restoreflow --help`` lists them in.
"""

from restoreflow.cli.typer_app import app

# isort: off
from restoreflow.cli import store_verbs  # noqa: F401  simulate ingest export ls serve-s3
from restoreflow.cli import model_verbs  # noqa: F401  train-prior index
from restoreflow.cli import run_verbs  # noqa: F401  run rerun restore calibrate report demo serve
# isort: on



def main() -> None:
    """The ``restoreflow`` program (console script and ``python -m restoreflow.cli``): the
    app, as its own process, so a flow verb starts its private Prefect server at once
    (:func:`restoreflow.cli.runtime.start_private_server`; not when the app is invoked
    in-process, e.g. by typer's CliRunner, where Prefect may be set up already)."""
    from restoreflow.cli import runtime

    runtime.AS_PROGRAM = True
    app()


__all__ = ["app", "main"]
