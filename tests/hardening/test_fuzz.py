"""Spec and reader fuzzing: random degradation texts, run-spec dicts and YAML documents,
and random bytes under every image extension. Only the documented error may escape
(SpecError / ImageRejected, with a one-line message), and nothing hangs."""

from __future__ import annotations

import contextlib
import io
import signal

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restoreflow.degradation import DegradationSpec, SpecError
from restoreflow.spec import RunSpec
from restoreflow.storage.decode import ImageRejected
from restoreflow.storage.readers import IMAGE_EXTENSIONS, read_image

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CALL_LIMIT_S = 10.0
COUNTS: dict[str, int] = {}


@contextlib.contextmanager
def time_limit(seconds: float = CALL_LIMIT_S):
    """Fail a call that runs longer than ``seconds`` (SIGALRM; pytest runs tests in the
    main thread)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"call took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _count(kind: str) -> None:
    COUNTS[kind] = COUNTS.get(kind, 0) + 1


# ---- degradation specs ------------------------------------------------------------------

NAMES = ["gaussian_blur", "motion_blur", "sr", "inpaint", "denoise", "colorise",
         "kernel_blur", "gaussian_noise", "poisson_noise", "uniform_blur", "blur", "x"]
KEYS = ["sigma", "size", "factor", "kernel", "ratio", "length", "path", "photons", "boundary",
        "angle", "seed", "bogus"]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**30, 10**30).map(str),
    st.sampled_from(["", "nan", "inf", "-0", "1e999", "bicubic", "circular", '"a,b"', '"',
                     "\\", "()", "1_000", "0x10", "١", "True"]),
    st.text(max_size=8),
)


@st.composite
def spec_texts(draw):
    terms = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(NAMES) | st.text(max_size=6))
        args = [f"{draw(st.sampled_from(KEYS) | st.text(max_size=4))}={draw(VALUES)}"
                for _ in range(draw(st.integers(0, 3)))]
        paren = draw(st.sampled_from(["({})", "({}", "{})", "[{}]", "(({}))"]))
        terms.append(name + (paren.format(",".join(args)) if args or draw(st.booleans())
                             else ""))
    sep = draw(st.sampled_from(["+", " + ", "++", ",", "+\n"]))
    return sep.join(terms)


@FUZZ
@given(text=st.one_of(spec_texts(), st.text(max_size=80)))
def test_degradation_parse_raises_only_spec_error(text):
    _count("degradation specs")
    with time_limit():
        try:
            spec = DegradationSpec.parse(text)
        except SpecError as exc:
            assert "\n" not in str(exc)
            return
    assert DegradationSpec.parse(spec.text) == spec  # what parses, round-trips


# ---- run specs --------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
FIELDS = ["name", "sources", "store", "degradation", "simulate", "seed", "prior", "restore",
          "adapt", "calibration", "export", "report"]
SUBFIELDS = ["sampler", "steps", "tile", "overlap", "posterior_samples", "options", "enabled",
             "corpus", "neighbours", "clean", "alpha", "min_psnr", "format", "out",
             "collections", "method", "rank"]


@st.composite
def run_dicts(draw):
    d = {"sources": ["imgs/"], "degradation": "gaussian_blur(sigma=2)"}
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(FIELDS) | st.text(max_size=6))
        if draw(st.booleans()):
            val = draw(st.dictionaries(st.sampled_from(SUBFIELDS) | st.text(max_size=5),
                                       JSONISH, max_size=4))
        else:
            val = draw(JSONISH | spec_texts())
        d[key] = val
    if draw(st.booleans()):
        d.pop(draw(st.sampled_from(["sources", "degradation"])), None)
    return d


@FUZZ
@given(data=run_dicts())
def test_run_spec_from_dict_raises_only_spec_error(data):
    _count("run-spec dicts")
    with time_limit():
        try:
            spec = RunSpec.from_dict(data)
        except SpecError as exc:
            assert "\n" not in str(exc)
            return
    assert RunSpec.from_dict(spec.model_dump(mode="json")) == spec


@FUZZ
@given(doc=st.one_of(run_dicts().map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
                     st.text(max_size=120),
                     st.sampled_from(["[" * 5000, "{a: " * 3000, "&a [*a]", "a: !!binary xyz",
                                      "!!python/object/apply:os.system [touch x]",
                                      "sources: *x", "\x00", "---\n---\n",
                                      "a: &x [1]\nb: *x\n" * 3, "\udcff: 1"])))
def test_run_spec_yaml_raises_only_spec_error(doc, tmp_path_factory):
    _count("run-spec YAML documents")
    p = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    # lone surrogates become invalid UTF-8 bytes (the file is not UTF-8 text)
    p.write_bytes(doc.encode("utf-8", errors="surrogatepass"))
    with time_limit():
        try:
            RunSpec.from_yaml(str(p))
        except SpecError as exc:
            assert "\n" not in str(exc)


# ---- image readers ----------------------------------------------------------------------


def _valid_files() -> dict[str, bytes]:
    """Small valid files to mutate, one per format."""
    from astropy.io import fits
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    out = {}
    for fmt, ext in (("PNG", ".png"), ("JPEG", ".jpg")):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt)
        out[ext] = buf.getvalue()
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb, compression="zlib")
    out[".tif"] = buf.getvalue()
    buf = io.BytesIO()
    fits.PrimaryHDU(rng.random((12, 10)).astype(np.float32)).writeto(buf)
    out[".fits"] = buf.getvalue()
    return out


VALID = _valid_files()
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00",
         b"SIMPLE  =                    T"]


@st.composite
def image_bytes(draw):
    how = draw(st.sampled_from(["random", "magic", "mutate", "truncate"]))
    if how == "random":
        return draw(st.binary(max_size=2048))
    if how == "magic":
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=2048))
    base = bytearray(VALID[draw(st.sampled_from(sorted(VALID)))])
    if how == "truncate":
        return bytes(base[: draw(st.integers(0, len(base)))])
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(base) - 1))
        base[i] = draw(st.integers(0, 255))
    return bytes(base)


@FUZZ
@given(data=image_bytes(), ext=st.sampled_from(sorted(IMAGE_EXTENSIONS) + [".PNG", ".txt", ""]))
def test_read_image_raises_only_image_rejected(data, ext):
    _count("image byte strings")
    with time_limit():
        try:
            arr, meta = read_image(data, f"fuzz{ext}", max_pixels=4_000_000, min_side=1)
        except ImageRejected as exc:
            assert exc.reason and "\n" not in exc.reason
            if not exc.reason.startswith(("not a ", "unsupported file extension", "empty")):
                _count("image byte strings that reached a decoder")
            return
    _count("image byte strings decoded")
    assert arr.ndim in (2, 3) and arr.size > 0 and meta["format"] in ("png", "jpeg", "tiff",
                                                                      "fits")


def test_fuzz_counts():
    """Runs last in this file: how many inputs were thrown at each parser."""
    print(f"\nfuzzed: {COUNTS}")
    if COUNTS:
        assert all(COUNTS[k] >= 50 for k in COUNTS if k.endswith("s")), COUNTS


# ---- malformed run specs, named ---------------------------------------------------------

BASE = {"sources": ["imgs/"], "degradation": "gaussian_blur(sigma=2)"}


@pytest.mark.parametrize("patch,needle", [
    ({"restore": 5}, "restore: Input should be a valid dictionary"),
    ({"sources": "imgs/"}, "sources: Input should be a valid list"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"restore": {"steps": 10**12}}, "restore.steps: Input should be less than or equal to 1000"),
    ({"restore": {"posterior_samples": 10**6}}, "restore.posterior_samples"),
    ({"degradation": "gaussian_noise(sigma=-0.1)"}, "degradation"),
    ({"degradation": "gaussian_blur(sigma=-3)+gaussian_noise(sigma=0.1)"}, "sigma"),
    ({"degradation": "gaussian_blur(sigma=nan)"}, "sigma"),
    ({"degradation": "sr(factor=100000)"}, "factor"),
    ({"export": {"format": "bmp"}}, "export.format: Input should be 'png', 'tiff' or 'fits'"),
    ({"adapt": {"enabled": True, "neighbours": 10**9}}, "adapt.neighbours"),
    ({"restore": {"options": {"x": [1, 2]}}}, "restore.options.x"),
    ({"Sources": ["a"]}, "Sources: unknown field"),
])
def test_malformed_run_specs_name_the_field(patch, needle):
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict({**BASE, **patch})
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_more_neighbours_than_the_corpus_fails_before_restoring(tmp_path, prefect_server,
                                                                dask_cluster):
    from hardening_helpers import cli_env, run_cli, run_spec, write_pngs, write_spec

    from helpers import save_tiny_prior
    from restoreflow.storage.store import TileStore

    write_pngs(tmp_path / "src", 2, seed=41)
    write_pngs(tmp_path / "corpus", 3, seed=42, prefix="c")
    spec = run_spec([tmp_path / "src"], tmp_path / "store", save_tiny_prior(tmp_path / "prior"),
                    adapt={"enabled": True, "corpus": [str(tmp_path / "corpus")],
                           "neighbours": 5})
    env = cli_env(prefect_server, PREFECT_HOME=str(tmp_path / "ph"),
                  RESTOREFLOW_DASK_ADDRESS=dask_cluster)
    res = run_cli(["run", str(write_spec(tmp_path / "k.yaml", spec))], env, tmp_path)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run 'hardening' failed: ValueError: adapt.neighbours=5 "
                           "but the reference index holds 3 images"), res.stderr[-2000:]
    store = TileStore(tmp_path / "store")
    assert store.image_ids("input", complete_only=False)  # it got that far...
    assert "restored" not in store.collections()  # ...and restored nothing
