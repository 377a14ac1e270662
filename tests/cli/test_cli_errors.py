"""Every CLI error is one line, ``error: <what>: <why> (<what to do>)``, with exit 2 for a
usage mistake, and no traceback; restore and calibrate default to the same settings;
calibrate says what became of the per-pixel intervals (issue 30, items 2, 3 and 7)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restoreflow.cli import app

DEG = "gaussian_noise(sigma=0.05)"


def _cli(*args, env=None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80", **(env or {})})


def _one_line(res, code=2) -> str:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and "Usage:" not in res.output
    assert not any(c in res.output for c in "╭│╰"), res.output  # no boxed usage text
    assert "Value error" not in res.output
    return lines[0]


def _clean(tmp_path, n=17):
    """Enough calibration sources for a bound at the default alpha (0.1)."""
    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(n):
        Image.fromarray(np.full((24, 24, 3), i, np.uint8)).save(clean / f"c{i}.png")
    return clean


@pytest.fixture()
def store(tmp_path):
    (tmp_path / "src").mkdir()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(tmp_path / "src" / "a.png")
    res = _cli("ingest", str(tmp_path / "src"), "--store", str(tmp_path / "st"))
    assert res.exit_code == 0, res.output
    return str(tmp_path / "st")


@pytest.mark.parametrize("args, says", [
    (["simulate", "-d", "blur(", "--store", "st"],
     "error: --degradation: unbalanced '(' in spec 'blur('"),
    (["restore", "-d", DEG, "--store", "st", "--sampler", "ddgp"],
     "error: --sampler: 'ddgp' is not one of 'ddpg', 'ddnm', 'dps', 'diffpir', 'hqs', 'idbp'"),
    (["export", "--store", "st", "--format", "jpg", "--out", "o"],
     "error: --format: 'jpg' is not one of 'png', 'tiff', 'fits'"),
    (["run"], "error: Missing argument 'SPEC.yaml'"),
    (["export", "--nope"], "error: No such option: --nope"),
    (["index", "build", "--nope"], "error: No such option: --nope"),
])
def test_usage_errors_are_one_line(args, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_line(_cli(*args))
    assert line.startswith(says), line
    assert line.endswith("--help')"), line  # where to look
    assert not (tmp_path / "st").exists() and not (tmp_path / "o").exists()


def test_bare_verbs_still_print_their_help():
    res = _cli()
    assert "Usage:" in res.output and "error" not in res.output
    assert "Usage:" in _cli("index").output


def test_report_of_an_unknown_run_is_one_line(store, tmp_path):
    line = _one_line(_cli("report", "--store", store, "--run", "nosuchrun",
                          "--out", str(tmp_path / "r.html")))
    assert line.startswith("error: --run nosuchrun: no run 'nosuchrun'"), line
    assert not (tmp_path / "r.html").exists()


def test_export_of_an_unknown_id_writes_nothing(store, tmp_path):
    out = tmp_path / "o"
    line = _one_line(_cli("export", "--store", store, "--format", "png", "--out", str(out),
                          "--id", "deadbeef"))
    assert line.startswith("error: --id deadbeef: no complete image 'deadbeef' in collection "
                           "'input'"), line
    assert f"'restoreflow ls input --store {store}'" in line and "'st:" not in line
    assert not out.exists()


def test_a_missing_store_flag_says_the_default_was_used(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESTOREFLOW_STORE", raising=False)
    from restoreflow.settings import get_settings

    get_settings.cache_clear()
    line = _one_line(_cli("ls"))
    get_settings.cache_clear()
    assert line.startswith("error: no --store given, and the default store "), line
    assert "pass --store PATH" in line


def test_restore_and_calibrate_default_to_the_same_settings(store, tmp_path, monkeypatch):
    """The same flags on both verbs give the same settings hash, so the calibration
    applies to the restorations (restore --samples defaulted to 1, calibrate to 4)."""
    from restoreflow.cli import run_verbs

    cfgs = {}

    def capture(flow):
        def run(**kw):
            cfgs[flow.name] = kw["cfg"]
            raise RuntimeError("stop here")
        return run

    monkeypatch.setattr(run_verbs, "on_dask", capture)
    clean = _clean(tmp_path)
    for flags in ([], ["--steps", "3"], ["--samples", "4"]):
        cfgs.clear()
        _cli("restore", "-d", DEG, "--store", store, "--collection", "input", *flags)
        _cli("calibrate", "-d", DEG, "--store", store, "--clean", str(clean), *flags)
        assert set(cfgs) == {"restore", "calibrate"}, flags
        assert cfgs["restore"].settings_hash("p") == cfgs["calibrate"].settings_hash("p"), flags
    assert cfgs["calibrate"].restore.posterior_samples == 4


def test_calibrate_says_what_became_of_the_pixel_intervals():
    from restoreflow.cli.run_verbs import pixel_line

    none = pixel_line({"pixel": None, "pixel_note": "no per-pixel intervals: restore with "
                       "posterior_samples >= 2"})
    assert none == ("per-pixel intervals: none (no per-pixel intervals: restore with "
                    "posterior_samples >= 2)")
    some = pixel_line({"pixel": {"lam": 1.5, "epsilon": 0.1, "delta": 0.05,
                                 "mean_width": 0.123}})
    assert some == ("per-pixel intervals: lambda=1.5, mean width 0.123; expected fraction of "
                    "pixels outside <= 0.1 over new images, with probability 95%")


def test_calibrate_takes_the_pixel_guarantee_from_flags(store, tmp_path, monkeypatch):
    from restoreflow.cli import run_verbs

    seen = {}

    def capture(flow):
        def run(**kw):
            seen.update(kw)
            raise RuntimeError("stop here")
        return run

    monkeypatch.setattr(run_verbs, "on_dask", capture)
    clean = _clean(tmp_path)
    _cli("calibrate", "-d", DEG, "--store", store, "--clean", str(clean),
         "--pixel-epsilon", "0.2", "--pixel-delta", "0.05", "--alpha", "0.2")
    c = seen["calibration"]
    assert (c.pixel_epsilon, c.pixel_delta, c.alpha) == (0.2, 0.05, 0.2)
    seen.clear()
    _cli("calibrate", "-d", DEG, "--store", store, "--clean", str(clean))
    from restoreflow.spec import CalibrationOptions

    d = CalibrationOptions(clean=["x"])
    c = seen["calibration"]
    assert (c.pixel_epsilon, c.pixel_delta, c.alpha) == (d.pixel_epsilon, d.pixel_delta, d.alpha)


def test_adapt_without_an_index_is_refused_before_any_work(store):
    line = _one_line(_cli("restore", "-d", DEG, "--store", store, "--collection", "input",
                          "--adapt", "--prior", "unet"))
    assert line == (f"error: --adapt: the store holds no reference index 'default' to "
                    f"retrieve neighbours from: run 'restoreflow index build --corpus SRC "
                    f"--store {store}' first"), line


def test_calibrate_warns_before_work_when_no_pixel_intervals_can_come(tmp_path):
    from restoreflow.cli.run_verbs import pixel_outlook
    from restoreflow.settings import Settings
    from restoreflow.spec import CalibrationOptions
    from restoreflow.stages.config import RestoreConfig

    one = RestoreConfig(degradation=DEG)
    four = RestoreConfig(degradation=DEG, restore={"posterior_samples": 4})
    few = CalibrationOptions(clean=[str(_clean(tmp_path, 20))])
    assert "--samples 1" in pixel_outlook(one, few, Settings())
    assert pixel_outlook(four, few, Settings()) == (
        "per-pixel intervals at epsilon=0.1, delta=0.1 need at least 25 calibration "
        "sources; these images make 20: there will be none (add sources or raise "
        "--pixel-epsilon)")
    assert pixel_outlook(four, few.model_copy(update={"pixel_epsilon": 0.2}), Settings()) is None
