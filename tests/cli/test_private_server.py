"""A flow verb starts its private Prefect server with the verb, before it imports torch
and Prefect (issue 30, item 5: start-up); a server that cannot start is one line, and an
in-process invocation leaves no server or setting behind."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

EXE = os.path.join(os.path.dirname(sys.executable), "restoreflow")


def _env(tmp_path, **extra):
    drop = ("RESTOREFLOW_", "AWS_", "PREFECT_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)},
            "RESTOREFLOW_LOG_DIR": str(tmp_path / "logs"), "OMP_NUM_THREADS": "1", **extra}


def _store(tmp_path):
    (tmp_path / "src").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "src" / "a.png")
    r = subprocess.run([EXE, "ingest", "src", "--store", "st"], cwd=tmp_path,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_server_that_cannot_start_is_one_line(tmp_path):
    _store(tmp_path)
    env = _env(tmp_path, PREFECT_SERVER_DATABASE_CONNECTION_URL=(
        "sqlite+aiosqlite:////nonexistent/dir/prefect.db"))
    r = subprocess.run([EXE, "simulate", "-d", "gaussian_noise(sigma=0.1)", "--store", "st"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1, r.stderr
    assert lines[-1].startswith("error: the private Prefect server exited with code "), lines
    assert "unable to open database file" in lines[-1] and "Traceback" not in r.stderr
    assert not (tmp_path / "st" / "degraded").exists()


def test_an_in_process_invocation_leaves_nothing_behind(tmp_path):
    """typer's CliRunner (as tests and notebooks use it): no private server is started
    (Prefect there may be set up already), so PREFECT_API_URL is left as it was and a
    second flow verb in the same process works."""
    _store(tmp_path)
    script = (
        "import os, sys\n"
        "from typer.testing import CliRunner\n"
        "from restoreflow.cli import app\n"
        "from restoreflow.cli import runtime\n"
        "r = CliRunner().invoke(app, ['simulate', '-d', 'gaussian_noise(sigma=0.1)',"
        " '--store', 'st'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'PREFECT_API_URL' not in os.environ and not runtime._SERVER\n"
        "r = CliRunner().invoke(app, ['simulate', '-d', 'gaussian_noise(sigma=0.2)',"
        " '--collection', 'd2', '--store', 'st'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
    assert (tmp_path / "st" / "degraded").exists()
