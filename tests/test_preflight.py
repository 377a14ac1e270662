"""Preflight checks (issue 20 item 3): every configuration error that used to surface
inside the flow after ingest/simulate is found before any work, named by its field, on
one line, with nothing created; a good spec passes in milliseconds."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from helpers import save_tiny_prior
from restoreflow.preflight import (
    PreflightError,
    check_prior,
    check_run,
    check_sources,
    check_store,
)
from restoreflow.settings import Settings
from restoreflow.spec import RunSpec

DEG = "gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)"


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return save_tiny_prior(tmp_path_factory.mktemp("prior") / "p")


@pytest.fixture()
def ws(tmp_path, prior):
    """A work folder: two PNGs in src/, a PSF, a pickled-only prior, a regular file."""
    (tmp_path / "src").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(
            tmp_path / "src" / f"p{i}.png")
    np.save(tmp_path / "psf.npy", np.ones((3, 3)))
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    return tmp_path


def _spec(ws, prior_dir, **patch) -> RunSpec:
    d = {"sources": ["src"], "store": "store", "degradation": DEG, "prior": prior_dir,
         "report": None, **patch}
    return RunSpec.from_dict(d).resolved(str(ws))


def _settings(**kw) -> Settings:
    base = {"s3_endpoint_url": None, "aws_access_key_id": None, "aws_secret_access_key": None,
            "aws_profile": None, "aws_session_token": None, "prior": None,
            "store": "restoreflow-store"}
    return Settings().model_copy(update={**base, **kw})


def test_a_good_spec_passes_quickly_and_creates_nothing(ws, prior):
    spec = _spec(ws, prior, degradation="kernel_blur(path=psf.npy)",
                 calibration={"clean": ["src/p0.png", "src/p1.png"], "alpha": 0.5},
                 export={"out": "out/png"},
                 report="reports/r.html")
    before = sorted(p.name for p in ws.iterdir())
    check_run(spec, _settings())  # warm the imports
    t = time.perf_counter()
    check_run(spec, _settings())
    took = time.perf_counter() - t
    print(f"\npreflight of a local run spec: {took * 1000:.1f} ms")
    assert took < 0.5
    assert sorted(p.name for p in ws.iterdir()) == before


@pytest.mark.parametrize("patch,field,needle", [
    ({"prior": "pickled"}, "spec.prior", "only pickled weights (diffusion_pytorch_model.bin)"),
    ({"prior": "nowhere"}, "spec.prior", "not a model directory nor a hub id"),
    ({"degradation": "kernel_blur(path=nope.npy)"}, "spec.degradation",
     "kernel_blur path"),
    ({"degradation": "kernel_blur(path=file.txt)"}, "spec.degradation",
     "unsupported kernel file type"),
    ({"sources": ["src", "nope/"]}, "spec.sources[1]", "nope: no such file or directory"),
    ({"sources": ["empty"]}, "spec.sources[0]", "directory holds no image files"),
    ({"sources": ["src/*.tif"]}, "spec.sources[0]", "no image files match the pattern"),
    ({"calibration": {"clean": ["nocal/"]}}, "spec.calibration.clean[0]", "no such file"),
    ({"adapt": {"enabled": True, "corpus": ["noref"]}}, "spec.adapt.corpus[0]",
     "no such file"),
    ({"store": "file.txt/store"}, "spec.store", "file.txt, which is a regular file"),
    ({"store": "file.txt"}, "spec.store", "a regular file, not a directory"),
    ({"store": "src"}, "spec.store", "exists and is not a restoreflow store"),
    ({"export": {"out": "file.txt/out"}}, "spec.export.out", "which is a regular file"),
    ({"report": "src"}, "spec.report", "a directory, not a file"),
])
def test_each_error_names_its_field(ws, prior, patch, field, needle):
    spec = _spec(ws, prior, **patch)
    before = sorted(p.name for p in ws.iterdir())
    with pytest.raises(PreflightError) as err:
        check_run(spec, _settings())
    assert err.value.field == field and needle in str(err.value), str(err.value)
    assert str(err.value).startswith(f"{field}: ") and "\n" not in str(err.value)
    assert sorted(p.name for p in ws.iterdir()) == before


def test_store_and_prior_from_the_environment_are_named_by_their_variable(ws, prior):
    spec = _spec(ws, prior, store=None, prior=None)
    with pytest.raises(PreflightError, match=r"^RESTOREFLOW_STORE: .*regular file"):
        check_run(spec, _settings(store=str(ws / "file.txt" / "s")))
    with pytest.raises(PreflightError, match=r"^RESTOREFLOW_PRIOR: .*only pickled"):
        check_run(spec, _settings(prior=str(ws / "pickled")))
    check_run(spec, _settings())  # the shipped prior


def test_broken_prior_files_are_refused_without_loading(tmp_path, prior):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(prior, bad)
    (w,) = bad.glob("*.safetensors")
    w.write_bytes(w.read_bytes()[:6])
    with pytest.raises(PreflightError, match="not a safetensors file .truncated"):
        check_prior("--prior", str(bad))
    w.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(PreflightError, match="header length"):
        check_prior("--prior", str(bad))
    shutil.rmtree(bad)
    shutil.copytree(prior, bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(PreflightError, match="config.json: not a readable JSON config"):
        check_prior("--prior", str(bad))
    check_prior("--prior", prior)


def test_unwritable_store_location(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
    else:  # root writes through permissions: a read-only mount is the real case
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.strip()}")
    try:
        with pytest.raises(PreflightError, match=r"^--store: .*cannot create it: .* is not "
                                                 "writable"):
            check_store("--store", str(ro / "a" / "store"), _settings())
        with pytest.raises(PreflightError, match="is not writable"):
            check_store("--store", str(ro), _settings())
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)
        else:
            ro.chmod(0o755)


def test_unreachable_s3_fails_fast():
    settings = _settings(s3_endpoint_url="http://127.0.0.1:9", store="s3://bucket/x")
    from pydantic import SecretStr

    settings = settings.model_copy(update={"aws_access_key_id": SecretStr("k"),
                                           "aws_secret_access_key": SecretStr("s")})
    t = time.perf_counter()
    with pytest.raises(PreflightError, match=r"^spec.store: s3://bucket/x: cannot reach S3 at "
                                             r"http://127.0.0.1:9"):
        check_store("spec.store", "s3://bucket/x", settings)
    with pytest.raises(PreflightError, match="cannot reach S3"):
        check_sources("SRC", ["s3://bucket/in/"], settings)
    assert time.perf_counter() - t < 10


@pytest.mark.s3
def test_s3_sources_and_store(s3_server, s3_settings):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_settings.storage_options(), skip_instance_cache=True)
    b = s3_server.bucket
    fs.pipe_file(f"{b}/preflight/in/a.png", b"not really a png")
    check_sources("SRC", [f"s3://{b}/preflight/in/", f"s3://{b}/preflight/in/a.png",
                          f"s3://{b}/preflight/*/*.png"], s3_settings)
    with pytest.raises(PreflightError, match=r"SRC\[0\]: .*no such object or prefix"):
        check_sources("SRC", [f"s3://{b}/preflight/none/"], s3_settings)
    with pytest.raises(PreflightError, match="no objects match"):
        check_sources("SRC", [f"s3://{b}/preflight/*.tif"], s3_settings)
    with pytest.raises(PreflightError, match="bucket 'no-such-bucket' does not exist"):
        check_sources("SRC", ["s3://no-such-bucket/x/"], s3_settings)
    check_store("--store", f"s3://{b}/preflight-new-store", s3_settings)
    with pytest.raises(PreflightError, match="does not exist"):
        check_store("--store", "s3://no-such-bucket/store", s3_settings)
    from pydantic import SecretStr

    denied = s3_settings.model_copy(update={"aws_secret_access_key": SecretStr("wrong")})
    with pytest.raises(PreflightError) as err:
        check_store("--store", f"s3://{b}/preflight-new-store", denied)
    assert "denied" in str(err.value) and "wrong" not in str(err.value)
    assert json.dumps(str(err.value))  # one printable line


def test_too_few_calibration_sources_are_refused_before_any_work(ws, prior):
    spec = _spec(ws, prior, calibration={"clean": ["src"], "alpha": 0.1})
    with pytest.raises(PreflightError) as exc:
        check_run(spec, _settings())
    assert str(exc.value).startswith(
        "spec.calibration.clean: the calibration images make 2 source(s) (grouped by image); "
        "a bound at alpha=0.1 needs at least 9")
    folder = _spec(ws, prior, calibration={"clean": ["src"], "alpha": 0.3,
                                           "group_by": "folder"})
    with pytest.raises(PreflightError, match="make 1 source"):
        check_run(folder, _settings())
