"""``python -m restoreflow.cli``: the ``restoreflow`` command."""

from restoreflow.cli import app

if __name__ == "__main__":
    app()
