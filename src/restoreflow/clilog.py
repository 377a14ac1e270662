"""Where the logs of a CLI verb go (issue 20 items 3 and 6).

The terminal shows Prefect's warnings (rejected files, a store lock being waited for) but
no tracebacks: a failed flow is reported by the CLI in one line that names a log file,
and the log file holds every record at the configured level, tracebacks included. The
configuration is Prefect's own logging.yml with a filter on its console handler and a
file handler on the root logger, handed to Prefect through PREFECT_LOGGING_SETTINGS_PATH
so that the worker processes of the embedded Dask cluster (which inherit the
environment) log the same way. Nothing is changed where the user chose a Prefect
logging configuration of their own. Log files older than :data:`KEEP_DAYS` days are
deleted when a verb starts (:func:`prune_logs`).

Light module: imported by the ``()`` factory of Prefect's dictConfig in every process.
"""

from __future__ import annotations

import logging
import os
import re

# records of these loggers at ERROR and above say that a flow or task run failed: the
# CLI says it once, on one line
_FAILURE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.flow_engine",
                    "prefect.task_engine")
_FILTER = "restoreflow_console"
_HANDLER = "restoreflow_file"


class ConsoleFilter(logging.Filter):
    """Keep off the terminal what goes to the log file only: records that carry a
    traceback, and the ERROR records of failed flow and task runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info or record.exc_text:
            return False
        return not (record.levelno >= logging.ERROR
                    and record.name.startswith(_FAILURE_LOGGERS))


class AsyncioLeftovers(logging.Filter):
    """asyncio reports the exception of a request that nobody awaited any more (an S3
    connection dropped mid-write while the verb was already failing) as an ERROR with a
    traceback, after the CLI's one-line error. Such records are demoted to DEBUG: the log
    file (at DEBUG) may keep them, the terminal never shows them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).endswith("exception was never retrieved"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def quiet_asyncio_leftovers() -> None:
    """Install :class:`AsyncioLeftovers` on the ``asyncio`` logger once (every verb)."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, AsyncioLeftovers) for f in logger.filters):
        logger.addFilter(AsyncioLeftovers())


#: a verb's log files older than this are deleted when the next verb starts
KEEP_DAYS = 30
_LOG_NAME = re.compile(r"^[a-z][a-z-]*-\d{8}T\d{6}-\d+\.log$")  # <verb>-<time>-<pid>.log


def prune_logs(directory: str, keep_days: float = KEEP_DAYS) -> int:
    """Delete the log files this module named (``<verb>-<time>-<pid>.log``) that are older
    than ``keep_days`` in ``directory`` (a nightly deployment writes one a night); other
    files are never touched. Returns how many were deleted."""
    import time

    cutoff = time.time() - keep_days * 86400
    n = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for e in entries:
        try:
            if _LOG_NAME.match(e.name) and e.is_file() and e.stat().st_mtime < cutoff:
                os.remove(e.path)
                n += 1
        except OSError:
            continue  # another process's file, or gone already
    return n


def log_dir() -> str:
    """``RESTOREFLOW_LOG_DIR``, else ``<tmp>/restoreflow-logs-<uid>`` (one per user: the
    temporary folder is shared)."""
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return os.environ.get("RESTOREFLOW_LOG_DIR") or os.path.join(
        tempfile.gettempdir(), f"restoreflow-logs-{uid}")


def _prefect_logging_yml() -> str | None:
    """Prefect's default logging.yml, located without importing Prefect."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(loc, "logging", "logging.yml")
        if os.path.isfile(path):
            return path
    return None


def logging_config(log_file: str) -> dict | None:
    """Prefect's default logging config with the console filter and the file handler."""
    import yaml

    src = _prefect_logging_yml()
    if src is None:
        return None
    with open(src, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg.setdefault("filters", {})[_FILTER] = {"()": f"{__name__}.ConsoleFilter"}
    handlers = cfg.get("handlers", {})
    for name in ("console", "debug"):
        if name in handlers:
            handlers[name].setdefault("filters", []).append(_FILTER)
    handlers[_HANDLER] = {
        "level": 0, "class": "logging.FileHandler", "formatter": "standard",
        # Prefect substitutes $SETTINGS into the file's text: a $ in the path is escaped
        "filename": log_file.replace("$", "$$"), "delay": True, "encoding": "utf-8",
    }
    root = cfg.setdefault("root", {"level": "WARNING"})
    root["handlers"] = [*root.get("handlers", []), _HANDLER]
    for name in ("prefect._internal", "prefect.extra"):  # these do not propagate to root
        logger = cfg.get("loggers", {}).get(name)
        if logger is not None:
            logger["handlers"] = [*logger.get("handlers", []), _HANDLER]
    return cfg


def configure(verb: str, user_settings: dict | None = None) -> str | None:
    """Route this process's (and its child processes') Prefect logging as described in
    the module docstring; returns the log file's path (created at its first record), or
    None where the user configured Prefect's logging, Prefect is already imported here
    (it has set up its logging) or its logging.yml cannot be found."""
    import atexit
    import shutil
    import sys
    import tempfile
    import time

    import yaml

    key = "PREFECT_LOGGING_SETTINGS_PATH"
    directory = log_dir()
    prune_logs(directory)
    if os.environ.get(key) or (user_settings or {}).get(key) or "prefect" in sys.modules:
        return None
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK | os.X_OK):
        return None  # logging would fail at its first record: keep Prefect's default
    log_file = os.path.join(directory, f"{verb}-{time.strftime('%Y%m%dT%H%M%S')}-"
                                       f"{os.getpid()}.log")
    cfg = logging_config(log_file)
    if cfg is None:
        return None
    tmp = tempfile.mkdtemp(prefix=f"restoreflow-logging-{os.getpid()}-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    path = os.path.join(tmp, "logging.yml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    os.environ[key] = path
    return log_file


def log_failure(what: str, exc: BaseException) -> None:
    """The traceback of a failure the CLI reports in one line, into the log file (the
    console filter keeps it off the terminal)."""
    logging.getLogger("restoreflow.cli").error("%s failed", what, exc_info=exc)
