"""Every verb runs with the same quiet, offline Prefect settings, and two verbs started
at once (different stores, no Prefect server, default PREFECT_HOME) both succeed: each
process gets an ephemeral Prefect database of its own (issue 19, item 3)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from restoreflow import samples

EXE = os.path.join(os.path.dirname(sys.executable), "restoreflow")


def _user_env(home) -> dict[str, str]:
    """A new user's environment: no PREFECT_*/RESTOREFLOW_* settings, a fresh HOME (so
    ~/.prefect/prefect.db would be shared by every process)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "RESTOREFLOW_", "AWS_")) and k != "DO_NOT_TRACK"}
    env.update(HOME=str(home), OMP_NUM_THREADS="1")
    return env


def _tiny_store(path) -> str:
    from restoreflow.settings import Settings
    from restoreflow.storage.ingest import ingest_array
    from restoreflow.storage.store import TileStore

    store = TileStore(path, Settings(), tile_size=16)
    rng = np.random.default_rng(len(str(path)))
    for i in range(2):
        ingest_array(store, (rng.random((24, 24, 3)) * 255).astype(np.uint8), f"p{i}.png")
    return str(path)


def _start(args, env, cwd):
    return subprocess.Popen([EXE, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _finish(procs, timeout=300):
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=timeout)
            out.append((p.returncode, o, e))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _assert_quiet(results):
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
        text = out + err
        assert "Traceback" not in text, err[-3000:]
        assert "telemetry" not in text.lower(), err[-3000:]
        assert "database is locked" not in text, err[-3000:]
        assert " | INFO " not in text, err[-3000:]  # Prefect's INFO lines


@pytest.mark.slow
def test_two_verbs_at_once_on_different_stores(tmp_path):
    env = _user_env(tmp_path / "home")
    stores = [_tiny_store(tmp_path / f"store{i}") for i in range(2)]
    procs = [_start(["simulate", "-d", "gaussian_noise(sigma=0.05)", "--store", s], env,
                    tmp_path) for s in stores]
    results = _finish(procs)
    _assert_quiet(results)
    assert all("degraded: 2 written" in out for _, out, _ in results)
    # the user's Prefect home was not used (nothing to share, nothing left behind)
    assert not (tmp_path / "home" / ".prefect" / "prefect.db").exists()
    # an offline tool: no usage notice, no telemetry device id
    assert not (tmp_path / "home" / ".prefect" / ".sdk_telemetry").exists()
    assert all("anonymous usage" not in out + err for _, out, err in results)


@pytest.mark.slow
def test_train_prior_is_quiet(tmp_path):
    env = _user_env(tmp_path / "home")
    img = str(samples.sample_path("coins.png"))
    (res,) = _finish([_start(["train-prior", "--out", str(tmp_path / "run"), "--steps", "2",
                              "--batch-size", "1", "--image", img, "--threads", "1"],
                             env, tmp_path)])
    _assert_quiet([res])
    assert "prior written to" in res[1]


def test_user_prefect_settings_are_kept(tmp_path, monkeypatch):
    """Where the user set PREFECT_HOME / PREFECT_API_URL / a database URL (environment or
    active profile), the CLI keeps them and adds no private database; otherwise it picks
    a per-process one."""
    from restoreflow.cli import runtime

    names = ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL",
             "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_SERVER_ANALYTICS_ENABLED",
             "PREFECT_LOGGING_LEVEL", "PREFECT_PROFILE", "DASK_LOGGING__DISTRIBUTED",
             "DO_NOT_TRACK")
    for n in names:
        monkeypatch.delenv(n, raising=False)
    profiles = tmp_path / "profiles.toml"
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    db = "PREFECT_SERVER_DATABASE_CONNECTION_URL"

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "mine"))
    runtime.prefect_env()
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "mine")
    assert db not in os.environ and "PREFECT_API_DATABASE_CONNECTION_URL" not in os.environ
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["DO_NOT_TRACK"] == "1"  # no SDK telemetry from an offline tool
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "WARNING"

    monkeypatch.delenv("PREFECT_HOME")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    runtime.prefect_env()
    assert db not in os.environ

    monkeypatch.delenv("PREFECT_API_URL")
    profiles.write_text('active = "srv"\n[profiles.srv]\n'
                        'PREFECT_API_URL = "http://127.0.0.1:1/api"\n')
    runtime.prefect_env()
    assert db not in os.environ

    profiles.unlink()
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "DEBUG")
    runtime.prefect_env()
    url = os.environ[db]
    assert url.startswith("sqlite+aiosqlite:///") and f"-{os.getpid()}-" in url
    assert os.path.isdir(os.path.dirname(url.removeprefix("sqlite+aiosqlite:///")))
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's choice
    monkeypatch.delenv("DO_NOT_TRACK")
    runtime.prefect_env()
    assert "DO_NOT_TRACK" not in os.environ  # they opted in: their telemetry stays on
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    runtime.prefect_env()
    assert os.environ["DO_NOT_TRACK"] == "0"
    assert os.environ["PREFECT_LOGGING_LEVEL"] == "DEBUG"
    runtime.prefect_env()  # idempotent: the same database
    assert os.environ[db] == url
