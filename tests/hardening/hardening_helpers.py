"""Helpers of the hardening tests (tests/hardening is on sys.path for its test files)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIN = os.path.dirname(sys.executable)
RESTOREFLOW = os.path.join(BIN, "restoreflow")
DEGRADATION = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes in process group ``pgid``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Signal the whole process group of ``proc`` (started with start_new_session=True)
    and wait until no process of the group is left."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while group_members(proc.pid):
        if time.monotonic() > deadline:
            for pid in group_members(proc.pid):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
            break
        time.sleep(0.05)


def write_pngs(d: Path, n: int, seed: int, size: int = 32, prefix: str = "im") -> list[Path]:
    """``n`` blocky random RGB PNGs of ``size`` px (distinct content per seed)."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.random((size // 4, size // 4, 3))
        img = (np.kron(base, np.ones((4, 4, 1))) * 255).astype(np.uint8)
        p = d / f"{prefix}{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def run_spec(sources, store, prior, out=None, report=None, steps: int = 3, **more) -> dict:
    spec = {
        "name": "hardening", "sources": [str(s) for s in sources], "store": str(store),
        "degradation": DEGRADATION, "simulate": True, "prior": str(prior),
        "restore": {"steps": steps, "tile": 32, "overlap": 8},
        "export": {"format": "png", "out": str(out)} if out else None,
        "report": str(report) if report else None,
    }
    spec.update(more)
    return spec


def write_spec(path: Path, spec: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def cli_env(prefect_api: str | None, **extra: str) -> dict[str, str]:
    """Environment of a `restoreflow` subprocess: one local Dask worker, 16 px tiles,
    one OMP thread, the shared Prefect server, no inherited store or S3 settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESTOREFLOW_", "AWS_", "PREFECT_API_URL"))}
    env.update({"OMP_NUM_THREADS": "1", "RESTOREFLOW_DASK_WORKERS": "1",
                "RESTOREFLOW_TILE_SIZE": "16", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "RESTOREFLOW_LOG_LEVEL": "WARNING"})
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    env.update(extra)
    return env


def start_cli(args: list[str], env: dict, cwd: Path, log: Path | None = None
              ) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([RESTOREFLOW, *args], env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    finally:
        if log:
            out.close()


def run_cli(args: list[str], env: dict, cwd: Path, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """Run ``restoreflow ARGS`` to the end in its own process group (killed on timeout)."""
    proc = subprocess.Popen([RESTOREFLOW, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        raise AssertionError(f"restoreflow {args} timed out; stderr tail:\n{err[-3000:]}") from None
    finally:
        if group_members(proc.pid):
            kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def image_status(store_dir: Path) -> dict[str, dict[str, str | None]]:
    """{collection: {image_id: status}} read straight from the zarr.json files."""
    out: dict[str, dict[str, str | None]] = {}
    if not store_dir.is_dir():
        return out
    for coll in sorted(p for p in store_dir.iterdir() if p.is_dir()):
        if not (coll / "zarr.json").is_file():
            continue
        imgs = {}
        for img in sorted(p for p in coll.iterdir() if p.is_dir()):
            try:
                attrs = json.loads((img / "zarr.json").read_text()).get("attributes", {})
            except (OSError, ValueError):
                attrs = {}
            imgs[img.name] = attrs.get("status")
        out[coll.name] = imgs
    return out


def read_every_tile(store, collection: str, image_id: str) -> np.ndarray:
    """The image assembled tile by tile with one read per chunk (each chunk decoded on
    its own, so a corrupt chunk raises)."""
    c, h, w = store.shape(collection, image_id)
    dtype = np.float32 if collection != "input" else None
    full = None
    for _, _, y0, y1, x0, x1 in store.tiles(collection, image_id):
        tile = store.read_region(collection, image_id, y0, y1, x0, x1)
        if full is None:
            full = np.empty((c, h, w), dtype=dtype or tile.dtype)
        full[:, y0:y1, x0:x1] = tile
    return full


def snapshot_tree(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file and link under ``root``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out
