"""What every verb runs in: the process's Prefect settings (quiet, offline, and a private
ephemeral database unless the user chose their own), and the one-line error a verb exits
with (a failed preflight check included)."""

from __future__ import annotations

import typer

# where a user's own Prefect setup is named; with none of these, each process gets a
# private ephemeral database (two verbs at once would lock a shared ~/.prefect/prefect.db)
_PREFECT_USER_SETTINGS = ("PREFECT_API_URL", "PREFECT_HOME",
                          "PREFECT_API_DATABASE_CONNECTION_URL",
                          "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def profile_settings() -> dict:
    """The settings of the active Prefect profile in the user's profiles.toml ({} if
    none); read as TOML, without importing Prefect."""
    import os
    import tomllib
    from pathlib import Path

    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    name = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    settings = (data.get("profiles") or {}).get(name) or {}
    return settings if isinstance(settings, dict) else {}


def _private_prefect_db() -> None:
    """A temporary SQLite database for this process's ephemeral Prefect server, removed
    at exit, unless the user chose a server, a home or a database (env or profile)."""
    import atexit
    import os
    import shutil
    import tempfile

    profile = profile_settings()
    if any(os.environ.get(k) or profile.get(k) for k in _PREFECT_USER_SETTINGS):
        return
    tmp = tempfile.mkdtemp(prefix=f"restoreflow-prefect-{os.getpid()}-")
    # registered before Prefect's own atexit hooks, so it runs after its server stopped
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"{_SQLITE}{tmp}/{_PRIVATE_DB}"
    seed_prefect_db(create=False)


_SQLITE, _PRIVATE_DB = "sqlite+aiosqlite:///", "prefect.db"


def _template_db():
    """Where the migrated, empty Prefect database of this Prefect version is cached."""
    import os
    from importlib.metadata import version
    from pathlib import Path

    cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser()
    return cache / "restoreflow" / f"prefect-{version('prefect')}.db"


def seed_prefect_db(create: bool = True) -> None:
    """Start the process's private Prefect database from a copy of an already migrated
    empty one: the ephemeral server then starts seconds sooner (migrating a new SQLite
    database is most of its start). The template is made once per machine and Prefect
    version (``create``: the verbs that run flows), by ``prefect server database
    upgrade``; when it cannot be made the server migrates the database itself."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "")
    db = url.removeprefix(_SQLITE)
    if not (url.startswith(_SQLITE) and db.endswith(f"/{_PRIVATE_DB}")) or os.path.exists(db):
        return  # the user's own database, or seeded already
    template = _template_db()
    if not template.exists() and create:
        part = template.with_suffix(f".{os.getpid()}.part")
        try:
            template.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as home:
                env = {**os.environ, "PREFECT_HOME": home, "DO_NOT_TRACK": "1",
                       "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"{_SQLITE}{part}"}
                subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "server",
                                "database", "upgrade", "-y"], env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
            os.replace(part, template)  # atomic: two verbs making it at once both succeed
        except (OSError, subprocess.SubprocessError):
            part.unlink(missing_ok=True)
            return
    if template.exists():
        try:
            shutil.copyfile(template, db)
        except OSError:
            pass


def prefect_env() -> None:
    """Quiet, offline Prefect settings for every verb (the user's env wins): no
    analytics (offline they log telemetry errors) and no SDK telemetry (``DO_NOT_TRACK``:
    no usage notice, no device id written) unless the user turned analytics on, WARNING
    logs, and a private ephemeral database per process (see ``_private_prefect_db``)."""
    import os

    level = os.environ.get("RESTOREFLOW_LOG_LEVEL", "WARNING").upper()
    opted_in = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED", "").lower() in ("1", "true")
    if not opted_in:
        os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    # the private ephemeral server gets 20 s to start by default: a loaded machine (two
    # verbs at once beside a busy CPU) took longer and the verb failed
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # the embedded Dask cluster logs every worker start/stop at INFO; workers inherit this
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", level.lower())
    _private_prefect_db()
    import logging

    logging.getLogger("distributed").setLevel(level)


def run_preflight(check, *args):
    """Run a restoreflow.preflight check (returning what it returns); a failure is one
    line naming the field."""
    from restoreflow.preflight import PreflightError

    try:
        return check(*args)
    except PreflightError as exc:
        fail(str(exc))


def fail(msg: str, code: int = 2):
    """Print the one-line error and exit. asyncio's "exception was never retrieved"
    reports of the same failure (e.g. zarr's other writes when the disk is full) would
    only repeat it as tracebacks at exit, so they are silenced."""
    import logging

    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (the flow's log above holds the traceback)."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg[:500]}" if msg else type(exc).__name__
