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


#: the verbs that run flows: their private Prefect server starts with the verb
FLOW_VERBS = frozenset({"simulate", "run", "rerun", "restore", "score", "calibrate", "demo"})
AS_PROGRAM = False  # set by restoreflow.cli.main: the CLI is this process's program
_SERVER: dict = {}  # this process's private Prefect server: process, url, log file


def start_private_server(verb: str | None) -> None:
    """For a flow verb without a Prefect server of the user's: start this process's
    private Prefect API server (the uvicorn process Prefect's ephemeral mode runs, on a
    free loopback port, with the private database) in the background NOW, before the
    verb imports torch and Prefect and checks its inputs, and point ``PREFECT_API_URL``
    at it. The verb then waits for it only when it first needs it
    (:func:`private_server_ready`); it is stopped at exit (and by the watchdog if the
    verb is killed)."""
    import atexit
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    from importlib.util import find_spec
    from pathlib import Path

    if not AS_PROGRAM or verb not in FLOW_VERBS or _SERVER or "--help" in sys.argv[1:]:
        return
    if os.environ.get("PREFECT_API_URL") or profile_settings().get("PREFECT_API_URL"):
        return
    if "prefect" in sys.modules:  # its settings are read: it would not see the server
        return
    from restoreflow.watchdog import watch_this_process

    watch_this_process()  # the server ends with this verb, however it ends
    seed_prefect_db()  # a migrated database: the server starts seconds sooner
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    db = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL", "").removeprefix(_SQLITE)
    private = os.path.dirname(db) if db.endswith(f"/{_PRIVATE_DB}") else None
    log = (open(os.path.join(private, "server.log"), "wb") if private and os.path.isdir(private)
           else tempfile.NamedTemporaryFile(prefix="restoreflow-prefect-server-",
                                            suffix=".log", delete=False))
    app_dir = Path(find_spec("prefect").origin).parent.parent
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "error", "--lifespan", "on"],
        env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url
    _SERVER.update(process=proc, url=url, log=log.name)
    atexit.register(stop_private_server)


def private_server_ready(timeout: float = 120.0) -> None:
    """Wait until the private Prefect server answers (no-op without one); a server that
    exits or does not answer in ``timeout`` s is a one-line error with its last output."""
    import time
    import urllib.request

    proc = _SERVER.get("process")
    if proc is None or _SERVER.get("ready"):
        return
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{_SERVER['url']}/health", timeout=2) as r:
                if r.status == 200:
                    _SERVER["ready"] = True
                    return
        except OSError:
            pass
        time.sleep(0.1)
    import re

    with open(_SERVER["log"], errors="replace") as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    errors = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception)\b", ln)]
    why = (errors or lines or ["no output"])[-1][:300]
    state = (f"exited with code {proc.returncode}" if proc.poll() is not None
             else f"did not answer in {timeout:.0f} s")
    fail(f"the private Prefect server {state}: {why} (set PREFECT_API_URL to a running "
         "Prefect server, or run the verb again)", code=1)


def stop_private_server() -> None:
    """Stop the private Prefect server (if any) and forget it. At exit: registered before
    Prefect is imported, it runs after Prefect's own exit handlers have sent their last
    logs to it."""
    import os
    import subprocess

    proc = _SERVER.get("process")
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.unlink(_SERVER["log"])
    except (KeyError, OSError):
        pass
    if _SERVER and os.environ.get("PREFECT_API_URL") == _SERVER["url"]:
        del os.environ["PREFECT_API_URL"]
    _SERVER.clear()


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
