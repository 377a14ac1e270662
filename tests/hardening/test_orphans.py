"""No process of a killed verb outlives it (issue 32, item 1): SIGKILL the driver of
`restoreflow run`, `restore` or `calibrate` (the driver only, as the OOM killer does)
while its ephemeral Prefect server and local Dask cluster run; within 10 s none of the
processes it started is alive (before the watchdog, the Prefect server was still alive
minutes later)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from hardening_helpers import (
    DEGRADATION,
    cli_env,
    run_cli,
    run_spec,
    start_cli,
    write_pngs,
    write_spec,
)

from helpers import save_tiny_prior


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def _verb_args(verb: str, tmp_path, env) -> list[str]:
    src, prior = tmp_path / "src", save_tiny_prior(tmp_path / "prior")
    write_pngs(src, 4, seed=3, size=64)
    if verb == "run":
        write_spec(tmp_path / "spec.yaml",
                   run_spec([src], tmp_path / "store", prior, steps=200))
        return ["run", "spec.yaml"]
    settings = ["-d", DEGRADATION, "--store", "store", "--prior", prior, "--sampler", "ddpg",
                "--steps", "200"]
    if verb == "restore":
        for args in (["ingest", "src", "--store", "store"],
                     ["simulate", "-d", DEGRADATION, "--store", "store"]):
            assert run_cli(args, env, tmp_path).returncode == 0
        return ["restore", *settings]
    return ["calibrate", "--clean", "src", "--alpha", "0.5", *settings]


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["run", "restore", "calibrate"])
def test_a_killed_verb_leaves_no_process(verb, tmp_path):
    env = cli_env(None)
    proc = start_cli(_verb_args(verb, tmp_path, env), env, tmp_path, tmp_path / "run.log")
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for p in _descendants(proc.pid):
                seen.setdefault(p.pid, p)
            cmds = []
            for p in _alive(seen.values()):
                try:
                    cmds.append(" ".join(p.cmdline()))
                except psutil.Error:
                    continue
            server = any("uvicorn" in c for c in cmds)
            if server and sum("multiprocessing" in c or "spawn_main" in c for c in cmds) >= 2:
                break  # the Prefect server, a nanny and a worker are up
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-2000:]
        time.sleep(2)  # let the watchdog record the tree
        for p in _descendants(proc.pid):
            seen.setdefault(p.pid, p)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only
        proc.wait(10)
        end = time.monotonic() + 10
        while _alive(seen.values()) and time.monotonic() < end:
            time.sleep(0.25)
        left = _alive(seen.values())
        assert not left, [" ".join(p.cmdline())[:120] for p in left]
    finally:
        for p in _alive(seen.values()):
            p.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
