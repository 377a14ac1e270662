"""The CLI's logging: tracebacks and failed-run ERROR records stay off the terminal (they
go to the log file); warnings stay on it; a user's own Prefect logging config is kept."""

from __future__ import annotations

import logging
import sys

from restoreflow import clilog


def _record(name: str, level: int, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord(name, level, __file__, 1, "msg", None, info)


def test_console_filter():
    f = clilog.ConsoleFilter()
    assert f.filter(_record("prefect.flow_runs", logging.WARNING))  # e.g. REJECTED lines
    assert f.filter(_record("distributed.nanny", logging.WARNING))
    assert not f.filter(_record("prefect.flow_runs", logging.ERROR))
    assert not f.filter(_record("prefect.task_runs", logging.ERROR))
    assert not f.filter(_record("anything", logging.WARNING, exc=True))


def test_config_adds_the_file_handler_and_the_filter(tmp_path):
    cfg = clilog.logging_config(str(tmp_path / "a$b.log"))
    assert cfg["handlers"]["restoreflow_file"]["filename"] == str(tmp_path / "a$$b.log")
    assert "restoreflow_file" in cfg["root"]["handlers"]
    assert "console" in cfg["root"]["handlers"]
    assert cfg["handlers"]["console"]["filters"] == ["restoreflow_console"]


def test_user_logging_config_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("PREFECT_LOGGING_SETTINGS_PATH", str(tmp_path / "mine.yml"))
    assert clilog.configure("run") is None
    monkeypatch.delenv("PREFECT_LOGGING_SETTINGS_PATH")
    assert clilog.configure("run", {"PREFECT_LOGGING_SETTINGS_PATH": "x"}) is None


def test_unretrieved_asyncio_exceptions_stay_off_the_terminal(monkeypatch):
    """An S3 request dropped mid-write during an outage: asyncio logs 'Task exception was
    never retrieved' with a traceback after the CLI's one-line error (seen in the S3
    outage test). Demoted to DEBUG, it no longer reaches a terminal handler (WARNING, like
    Python's last-resort stderr handler); other asyncio errors still do."""
    logger = logging.getLogger("asyncio")
    seen: list[logging.LogRecord] = []
    terminal = logging.Handler(logging.WARNING)
    terminal.emit = seen.append
    monkeypatch.setattr(logger, "filters", list(logger.filters))
    monkeypatch.setattr(logger, "handlers", [terminal])
    monkeypatch.setattr(logger, "propagate", False)
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(logger.manager, "disable", logging.NOTSET)
    logger.manager._clear_cache()
    clilog.quiet_asyncio_leftovers()
    clilog.quiet_asyncio_leftovers()  # once
    assert sum(isinstance(f, clilog.AsyncioLeftovers) for f in logger.filters) == 1
    try:
        raise ConnectionResetError("Cannot write to closing transport")
    except ConnectionResetError as exc:
        logger.error("Task exception was never retrieved", exc_info=exc)
    assert seen == []
    logger.error("something else")
    assert [r.getMessage() for r in seen] == ["something else"]
    logger.manager._clear_cache()


def test_worker_heartbeat_noise_loses_its_traceback():
    import logging

    from restoreflow.tasks.worker_logging import HEARTBEAT, HeartbeatNoise

    try:
        raise OSError("Stream is closed")
    except OSError:
        import sys

        exc = sys.exc_info()
    rec = logging.LogRecord("distributed.worker", logging.WARNING, __file__, 1,
                            HEARTBEAT + ".", None, exc)
    assert HeartbeatNoise().filter(rec) and rec.levelno == logging.DEBUG
    assert rec.exc_info is None
    other = logging.LogRecord("distributed.worker", logging.WARNING, __file__, 1,
                              "Memory use is high", None, None)
    assert HeartbeatNoise().filter(other) and other.levelno == logging.WARNING


def test_old_log_files_are_pruned_and_nothing_else(monkeypatch, tmp_path):
    """A nightly deployment writes a log file a night: those older than KEEP_DAYS go when
    the next verb starts; files the module did not name stay, however old."""
    import os
    import time

    old = time.time() - (clilog.KEEP_DAYS + 1) * 86400
    names = {"run-20260101T020000-4242.log": old, "calibrate-20260102T020000-17.log": old,
             "run-20261201T020000-99.log": time.time(), "notes.log": old,
             "run-20260101T020000-4242.log.bak": old}
    for name, mtime in names.items():
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (mtime, mtime))
    (tmp_path / "run-20260101T020000-1.log").mkdir()  # a folder of that name: kept
    os.utime(tmp_path / "run-20260101T020000-1.log", (old, old))
    monkeypatch.setenv("RESTOREFLOW_LOG_DIR", str(tmp_path))
    monkeypatch.setenv("PREFECT_LOGGING_SETTINGS_PATH", "/user/own.yml")
    assert clilog.configure("run") is None  # the user's config is kept, the pruning done
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.log", "run-20260101T020000-1.log", "run-20260101T020000-4242.log.bak",
        "run-20261201T020000-99.log"]
    assert clilog.prune_logs(str(tmp_path / "missing")) == 0
