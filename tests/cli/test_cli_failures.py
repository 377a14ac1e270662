"""What the CLI prints when a job cannot work (issue 20 items 3 and 6): a configuration
error is one line naming the field, within seconds, before the store is created; a
failure mid-run is one line (no traceback on the terminal) naming the log file that
holds the traceback, and says whether completed images were kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import save_tiny_prior

DEG = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"


def _cli(*args, cwd, env, timeout=600):
    exe = os.path.join(os.path.dirname(sys.executable), "restoreflow")
    t = time.monotonic()
    r = subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    return r, time.monotonic() - t


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "p")


@pytest.fixture()
def env(tmp_path):
    drop = ("RESTOREFLOW_", "AWS_", "PREFECT_API_URL", "PREFECT_LOGGING_SETTINGS_PATH")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)},
            "PREFECT_HOME": str(tmp_path / "ph"), "RESTOREFLOW_DASK_WORKERS": "1",
            "RESTOREFLOW_TILE_SIZE": "16", "OMP_NUM_THREADS": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "RESTOREFLOW_LOG_DIR": str(tmp_path / "logs")}


@pytest.fixture()
def ws(tmp_path, prior):
    w = tmp_path / "ws"
    (w / "src").mkdir(parents=True)
    rng = np.random.default_rng(0)
    img = (np.kron(rng.random((4, 4, 3)), np.ones((8, 8, 1))) * 255).astype(np.uint8)
    Image.fromarray(img).save(w / "src" / "p0.png")
    (w / "pickled").mkdir()
    (w / "pickled" / "config.json").write_text("{}")
    (w / "pickled" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    (w / "file.txt").write_text("x")
    shutil.copytree(prior, w / "prior")
    return w


def _write_spec(ws, **patch):
    spec = {"name": "fail", "sources": ["src"], "store": "store", "degradation": DEG,
            "prior": "prior", "restore": {"steps": 2, "tile": 32, "overlap": 8},
            "report": None, **patch}
    (ws / "spec.yaml").write_text(yaml.safe_dump(spec))
    return "spec.yaml"


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, dirs, files in os.walk(root) for f in dirs + files)


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


RUN_CASES = {
    "pickled prior": ({"prior": "pickled"}, {},
                      "error: spec.prior: {ws}/pickled: only pickled weights"),
    "missing PSF": ({"degradation": "kernel_blur(path=psf.npy)"}, {},
                    "error: spec.degradation: kernel_blur path {ws}/psf.npy: no such file"),
    "store under a file": ({"store": "file.txt/store"}, {},
                           "error: spec.store: {ws}/file.txt/store: cannot create it under "
                           "{ws}/file.txt, which is a regular file"),
    "unreachable S3": ({"store": "s3://bucket/store"},
                       {"RESTOREFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9",
                        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
                       "error: spec.store: s3://bucket/store: cannot reach S3 at "
                       "http://127.0.0.1:9: EndpointConnectionError"),
    "missing calibration folder": ({"calibration": {"clean": ["cal/"]}}, {},
                                   "error: spec.calibration.clean[0]: {ws}/cal: no such file "
                                   "or directory"),
    "missing source": ({"sources": ["srcs/"]}, {},
                       "error: spec.sources[0]: {ws}/srcs: no such file or directory"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_config_errors_are_one_line_before_any_work(ws, env, tmp_path, case):
    patch, more_env, expected = RUN_CASES[case]
    spec = _write_spec(ws, **patch)
    before = _tree(ws)
    r, took = _cli("run", spec, cwd=ws, env={**env, **more_env})
    print(f"\n{case}: exit {r.returncode} after {took:.1f} s")
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-3000:])
    assert _one_line(r.stderr).startswith(expected.format(ws=ws)), r.stderr
    assert _tree(ws) == before  # no store, no report, nothing
    assert took < 60  # the interpreter and its imports; the checks take milliseconds


def test_other_verbs_check_before_work(ws, env, prior):
    store = ws / "store"
    cases = [
        (["restore", "-d", DEG, "--store", str(store), "--prior", "pickled"],
         "error: --prior: pickled: only pickled weights"),
        # the restore settings are one validated RestoreConfig, built before anything else
        (["restore", "-d", DEG, "--store", str(store), "--sampler", "ddpg", "--option",
          "gama=3"], "error: --option: unknown option 'gama' of sampler ddpg; its options: "
                     "gamma, zeta,"),
        (["restore", "-d", DEG, "--store", str(store), "--sampler", "ddpg", "--option",
          "zeta=3"],
         "error: --option: option zeta=3 of sampler ddpg: Input should be less than or "
         "equal to 1"),
        (["restore", "-d", DEG, "--store", str(store), "--sampler", "ddpg", "--option",
          "gamma=eight"],
         "error: --option: option gamma='eight' of sampler ddpg: Input should be a valid "
         "number"),
        (["calibrate", "-d", DEG, "--store", str(store), "--clean", "src", "--option",
          "zeta=often"], "error: --option: option zeta='often' of sampler hqs:"),
        (["restore", "-d", DEG, "--store", str(store), "--option", "gamma"],
         "error: --option: expected KEY=VALUE, got 'gamma'"),
        (["calibrate", "-d", DEG, "--store", str(store), "--clean", "src", "--sampler", "dps",
          "--option", "zeta=0.5"], "error: --option: unknown option 'zeta' of sampler dps"),
        (["calibrate", "-d", DEG, "--store", str(store), "--clean", "src", "--method",
          "split"], "error: --method: Input should be 'full', 'residual' or 'cqr'"),
        (["calibrate", "-d", DEG, "--store", str(store), "--clean", "cal/"],
         "error: --clean: cal/ (= {ws}/cal): no such file or directory"),
        (["calibrate", "-d", "kernel_blur(path=k.npy)", "--store", str(store), "--clean",
          "src"], "error: --degradation: kernel_blur path k.npy (= {ws}/k.npy): no such file"),
        (["ingest", "src", "nothing.png", "--store", str(store)],
         "error: SRC[1]: nothing.png (= {ws}/nothing.png): no such file or directory"),
        (["ingest", "src", "--store", "file.txt/s"],
         "error: --store: file.txt/s (= {ws}/file.txt/s): cannot create it under"),
    ]
    before = _tree(ws)
    for args, expected in cases:
        r, took = _cli(*args, cwd=ws, env=env)
        assert r.returncode == 2, (args, r.stdout[-2000:], r.stderr[-3000:])
        assert _one_line(r.stderr).startswith(expected.format(ws=ws)), (args, r.stderr)
        assert _tree(ws) == before, args
    # a manifest's sources are checked like a spec's
    manifest = ws / "manifest.json"
    manifest.write_text(json.dumps({"spec": {"sources": ["/nonexistent/in"], "degradation": DEG,
                                             "prior": prior, "report": None}}))
    r, _ = _cli("rerun", str(manifest), "--store", str(store), cwd=ws, env=env)
    assert r.returncode == 2
    assert _one_line(r.stderr) == ("error: spec.sources[0]: /nonexistent/in: no such file or "
                                   "directory")
    assert not store.exists()


def _mid_run_failure(ws, env, spec, expect_hint):
    r, took = _cli("run", spec, cwd=ws, env=env)
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    # the error line, and at most a few warnings (a rejected file, Dask stopping a worker)
    assert len(lines) <= 4, r.stderr[-3000:]
    (line,) = [ln for ln in lines if ln.startswith("error: ")]
    assert line.startswith("error: run 'fail' failed: ") and expect_hint in line, line
    log = line.rsplit(" Log: ", 1)[1]
    assert os.path.dirname(log) == env["RESTOREFLOW_LOG_DIR"]
    text = open(log, encoding="utf-8").read()
    assert "Traceback (most recent call last)" in text
    print(f"\n{took:.0f} s, {len(lines)} line(s) on stderr: {line[:300]}")
    return line, text


@pytest.mark.slow
def test_failure_in_a_model_task_is_one_line_with_the_log_named(ws, env):
    """A prior whose config.json does not match its weights passes the preflight (the
    weights are not loaded there) and fails in the worker's restore task, after ingest
    and simulate completed: the terminal gets one line (plus Dask's warnings as it stops
    the worker), the traceback of the task is in the log file."""
    cfg = json.loads((ws / "prior" / "config.json").read_text())
    cfg["block_out_channels"] = [16, 32]
    (ws / "prior" / "config.json").write_text(json.dumps(cfg))
    line, text = _mid_run_failure(ws, env, _write_spec(ws),
                                  "Completed images are kept (1 degraded, 1 input): run the "
                                  "same spec again to resume.")
    assert "cannot load UNet2DModel" in line
    assert "restore_task" in text or "restore-image" in text  # the worker's own record


@pytest.mark.slow
def test_sources_without_images_stop_after_ingest(ws, env):
    (ws / "bad").mkdir()
    (ws / "bad" / "x.png").write_bytes(b"not a png")
    line, _ = _mid_run_failure(ws, env, _write_spec(ws, sources=["bad"]),
                               "No image was completed: fix the cause and run again.")
    assert "spec.sources: no images to work on: all 1 file(s) were rejected" in line


def test_too_few_calibration_sources_stop_before_any_work(ws, env):
    """Three clean images cannot give a bound at alpha 0.1: `run` and `calibrate` say so
    in one line before they create the store or ingest anything (the run used to restore
    them all, then report no bound; calibrate failed after ingesting them)."""
    (ws / "cal").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        img = (np.kron(rng.random((4, 4, 3)), np.ones((8, 8, 1))) * 255).astype(np.uint8)
        Image.fromarray(img).save(ws / "cal" / f"c{i}.png")
    spec = _write_spec(ws, calibration={"clean": ["cal"], "alpha": 0.1})
    why = ("the calibration images make 3 source(s) (grouped by image); a bound at "
           "alpha=0.1 needs at least 9")
    r, _ = _cli("run", spec, cwd=ws, env=env)
    assert r.returncode == 2 and _one_line(r.stderr).startswith(
        f"error: spec.calibration.clean: {why}"), r.stderr[-2000:]
    r, _ = _cli("calibrate", "-d", "gaussian_noise(sigma=0.1)", "--clean", "cal", "--store",
                "store", cwd=ws, env=env)
    assert r.returncode == 2 and _one_line(r.stderr).startswith(f"error: --clean: {why}")
    assert not (ws / "store").exists()
