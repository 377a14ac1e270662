"""``python -m restoreflow.cli``: the ``restoreflow`` command."""

from restoreflow.cli import main

if __name__ == "__main__":
    main()
