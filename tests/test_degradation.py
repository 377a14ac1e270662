"""Degradation specs: parsing, canonical text, hashing, errors, building, determinism."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from restoreflow.degradation import DegradationSpec, SpecError, Term, make_generator, seed_for
from restoreflow.operators import BicubicDownsample, GaussianBlur, Inpainting, ShapeError
from restoreflow.operators.registry import NOISES, OPERATORS, REQUIRED, Entry, Param

parse = DegradationSpec.parse


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (
            "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)",
            "gaussian_blur(boundary=circular,sigma=3,size=19)+gaussian_noise(sigma=0.05)",
        ),
        (
            "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
            "sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)",
        ),
        ("inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)", None),
        ("denoise+gaussian_noise(sigma=0.1)", None),
        ("motion_blur(length=15)", "motion_blur(boundary=circular,intensity=0.5,length=15)"),
        ("kernel_blur(path=psf.fits)", "kernel_blur(boundary=circular,path=psf.fits)"),
        # noise first, spaces, upper case, float spelling, alias: same canonical text
        (
            " Gaussian_Noise( sigma = 5E-2 ) + GAUSSIAN_BLUR(sigma=3.0, boundary=Circular) ",
            "gaussian_blur(boundary=circular,sigma=3,size=19)+gaussian_noise(sigma=0.05)",
        ),
        ("colorize", "colorise"),
        ("gaussian_noise(sigma=0.00001)", "denoise+gaussian_noise(sigma=1e-5)"),
        (
            'kernel_blur(path="my psf, v2.npy")',
            'kernel_blur(boundary=circular,path="my psf, v2.npy")',
        ),
        ("sr(factor=2)", "sr(factor=2,kernel=bicubic)"),
    ],
)
def test_canonical_text_and_round_trip(text, canonical):
    spec = parse(text)
    assert spec.text == (canonical or text)
    assert parse(spec.text) == spec
    assert parse(spec.text).text == spec.text
    assert DegradationSpec.from_dict(spec.to_dict()) == spec
    assert DegradationSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_hash_is_stable():
    spec = parse("gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)")
    # literal computed once: changing the canonical form or the hash breaks manifests
    assert spec.hash == "26c357709fb94b88"
    assert spec.hash == hashlib.sha256(spec.text.encode()).hexdigest()[:16]
    assert parse("gaussian_blur(sigma=3.0,size=19)+gaussian_noise(sigma=5e-2)").hash == spec.hash
    assert parse("gaussian_blur(sigma=3)+gaussian_noise(sigma=0.06)").hash != spec.hash


def test_seed_for_is_stable_and_63_bit():
    assert seed_for("26c357709fb94b88", 0, "img-0") == 1525770376819742983
    s = {seed_for("h", seed, img) for seed in range(3) for img in ("a", "b")}
    assert len(s) == 6 and all(0 <= v < 2**63 for v in s)


def test_structure_accessors_and_sigma_y():
    spec = DegradationSpec.create(
        "sr", {"factor": 4}, "poisson_gaussian_noise", {"photons": 50, "sigma": 0.01}
    )
    assert spec.text == "sr(factor=4,kernel=bicubic)+poisson_gaussian_noise(photons=50,sigma=0.01)"
    assert spec.operator.params_dict == {"factor": 4, "kernel": "bicubic"}
    assert spec.sigma_y == pytest.approx((0.5 / 50 + 0.01**2) ** 0.5)
    assert parse("gaussian_blur(sigma=1)").noise is None
    assert parse("gaussian_blur(sigma=1)").sigma_y == 0.0


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("gausian_blur(sigma=3)", ["'gausian_blur'", "valid operators:"]),
        ("gaussian_blur(sigma=-1)", ["sigma=-1", "out of range", "valid parameters"]),
        ("gaussian_blur(sigma=nan)", ["sigma=nan", "finite"]),
        ("gaussian_blur(sigma=1,size=4)", ["size=4", "odd int"]),
        ("gaussian_blur(sigma=abc)", ["sigma='abc'", "not a number"]),
        ("gaussian_blur(sigmaa=1)", ["'sigmaa'", "sigma (float in (0, 100], required)"]),
        ("gaussian_blur(sigma=1,sigma=2)", ["'sigma' given twice"]),
        ("gaussian_blur", ["missing required parameter 'sigma'"]),
        ("gaussian_noise(sigma=-0.1)", ["sigma=-0.1", "[0, 1]"]),
        ("inpaint(ratio=1)", ["ratio=1", "[0, 1)"]),
        ("inpaint(ratio=-0.2)", ["ratio=-0.2"]),
        ("sr(factor=3)", ["factor=3", "one of 2|4|8"]),
        ("sr(factor=2.0)", ["factor='2.0'", "not an integer"]),
        ("sr(factor=2,kernel=lanczos)", ["kernel=lanczos", "bicubic|box"]),
        ("uniform_blur(size=3.5)", ["size='3.5'"]),
        ("poisson_noise(photons=0)", ["photons=0"]),
        ("gaussian_blur(sigma=1)+sr(factor=2)", ["more than one operator", "gaussian_blur, sr"]),
        ("gaussian_noise(sigma=0.1)+poisson_noise(photons=9)", ["more than one noise"]),
        ("gaussian_blur(sigma=1)+", ["empty term"]),
        ("", ["empty degradation spec"]),
        ("gaussian_blur(sigma=1", ["unbalanced '('"]),
        ("gaussian_blur(sigma=1))", ["unbalanced ')'"]),
        ("gaussian_blur(sigma=1)x", ["text after ')'"]),
        ("gaussian_blur(1)", ["expected key=value", "'1'"]),
        ('kernel_blur(path="a.npy)', ["unterminated quote"]),
    ],
)
def test_bad_specs_raise_one_line_errors_naming_the_bad_part(text, names):
    with pytest.raises(SpecError) as info:
        parse(text)
    msg = str(info.value)
    assert "\n" not in msg
    assert "valid operators: denoise, colorise, gaussian_blur" in msg
    for name in names:
        assert name in msg, (name, msg)


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


@pytest.mark.parametrize(
    "d",
    [
        {"operator": {"name": "sr", "params": {"factor": 4.0}}},  # float for an int
        {"operator": {"name": "gaussian_blur", "params": {"sigma": True}}},
        {"operator": {"name": "gaussian_noise", "params": {"sigma": 0.1}}},  # noise as operator
        {"operator": {"name": "denoise"}, "noise": {"name": "sr", "params": {"factor": 2}}},
        {"text": "denoise", "hash": "0000000000000000"},
        {"text": "denoise", "operator": {"name": "sr", "params": {"factor": 2}}},
        {},
    ],
)
def test_from_dict_rejects_bad_input(d):
    with pytest.raises(SpecError):
        DegradationSpec.from_dict(d)


def test_terms_must_be_canonical():
    with pytest.raises(SpecError, match="not canonical"):
        DegradationSpec(Term("gaussian_blur", (("sigma", 2.0),)))  # defaults missing
    with pytest.raises(SpecError, match="sigma=-1 is out of range"):
        DegradationSpec(Term("gaussian_blur", (("sigma", -1.0),)))
    assert DegradationSpec(Term.create("gaussian_blur", {"sigma": 2})) == parse(
        "gaussian_blur(sigma=2)"
    )


# ---- hypothesis: any valid spec text parses and round-trips ----


def _value(p: Param) -> st.SearchStrategy:
    if p.choices is not None:
        return st.sampled_from(p.choices)
    if p.type is str:
        return st.text(
            alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
            min_size=1,
            max_size=12,
        ).filter(lambda s: s.strip())
    lo = p.minimum if p.minimum is not None else 0
    hi = p.maximum if p.maximum is not None else lo + 10_000
    if p.type is int:
        lo, hi = int(lo) + p.min_exclusive, int(hi) - p.max_exclusive
        ints = st.integers(lo, hi)
        return (
            ints.map(lambda v: v if v % 2 else min(v + 1, hi if hi % 2 else hi - 1))
            if p.odd
            else ints
        )
    return st.floats(lo, hi, exclude_min=p.min_exclusive, exclude_max=p.max_exclusive)


def _value_text(p: Param, v) -> st.SearchStrategy:
    if p.type is str:
        safe = v == v.strip() and not any(c in ",()+=\"'\\" or c.isspace() for c in v)
        quoted = st.just(json.dumps(v))
        return st.one_of(st.just(v), quoted) if safe else quoted
    if p.type is float:
        return st.sampled_from([repr(v), f"{v:.17g}", f"{v:.17e}"])
    return st.just(str(v))


@st.composite
def _term_text(draw, entry: Entry):
    parts, expected = [], {}
    for p in entry.params:
        if p.derived is not None or (p.default is not REQUIRED and draw(st.booleans())):
            if draw(st.booleans()):
                continue  # leave the default (or derived value) out
        v = draw(_value(p))
        parts.append(f"{p.name}={draw(_value_text(p, v))}")
        expected[p.name] = float(v) if p.type is float else v
    parts = draw(st.permutations(parts))
    sp = draw(st.sampled_from(["", " "]))
    text = (
        entry.name if not parts and draw(st.booleans()) else f"{entry.name}({sp}{','.join(parts)})"
    )
    return text, expected


@st.composite
def _spec_text(draw):
    op = draw(st.sampled_from(sorted(OPERATORS)))
    op_text, op_expected = draw(_term_text(OPERATORS[op]))
    terms = [op_text]
    noise_expected = None
    if draw(st.booleans()):
        nz = draw(st.sampled_from(sorted(NOISES)))
        nz_text, noise_expected = draw(_term_text(NOISES[nz]))
        terms.append(nz_text)
        terms = draw(st.permutations(terms))
    return "+".join(terms), op, op_expected, noise_expected


@settings(max_examples=60, deadline=None)
@given(_spec_text())
def test_parser_round_trips_any_valid_spec(drawn):
    text, op_name, op_expected, noise_expected = drawn
    spec = parse(text)
    assert spec.operator.name == op_name
    for k, v in op_expected.items():
        assert spec.operator.params_dict[k] == v
    if noise_expected is None:
        assert spec.noise is None
    else:
        assert spec.noise.params_dict == {**spec.noise.params_dict, **noise_expected}
    again = parse(spec.text)
    assert again == spec and again.text == spec.text and again.hash == spec.hash
    assert DegradationSpec.from_dict(spec.to_dict()) == spec


# ---- building ----


def _x(shape=(1, 3, 16, 16)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float32)


def _degrade(text: str, seed: int, image_id: str, shape=(1, 3, 16, 16)):
    spec = parse(text)
    g = make_generator(spec, seed, image_id)
    deg = spec.build(shape[1:], g)
    return deg, deg.apply(_x(shape), g)


def test_build_returns_operator_noise_and_sigma_y():
    deg, y = _degrade("gaussian_blur(sigma=1)+gaussian_noise(sigma=0.05)", 0, "a")
    assert isinstance(deg.operator, GaussianBlur)
    assert deg.sigma_y == 0.05 and deg.noise.sigma_y == 0.05
    assert y.dtype == torch.float32 and y.shape == (1, 3, 16, 16)
    assert deg.operator.kernel.dtype == torch.float32
    deg64 = parse("sr(factor=4)").build((3, 16, 16), torch.Generator(), dtype=torch.float64)
    assert isinstance(deg64.operator, BicubicDownsample)
    assert deg64.noise is None and deg64.sigma_y == 0.0
    assert deg64.apply(_x().double(), torch.Generator()).shape == (1, 3, 4, 4)


@pytest.mark.parametrize(
    "text",
    [
        "inpaint(ratio=0.5)+gaussian_noise(sigma=0.1)",
        "motion_blur(length=7)+poisson_gaussian_noise(photons=30,sigma=0.02)",
        "inpaint_boxes(count=2,size=4)+poisson_noise(photons=10)",
    ],
)
def test_same_spec_seed_and_image_id_give_bit_identical_output(text):
    _, y1 = _degrade(text, 3, "image-1")
    _, y2 = _degrade(text, 3, "image-1")
    assert torch.equal(y1, y2)
    _, y3 = _degrade(text, 3, "image-2")
    _, y4 = _degrade(text, 4, "image-1")
    assert not torch.equal(y1, y3) and not torch.equal(y1, y4)


def test_different_image_id_gives_a_different_mask():
    d1, _ = _degrade("inpaint(ratio=0.5)", 0, "image-1")
    d2, _ = _degrade("inpaint(ratio=0.5)", 0, "image-2")
    d1b, _ = _degrade("inpaint(ratio=0.5)", 0, "image-1")
    assert isinstance(d1.operator, Inpainting)
    assert torch.equal(d1.operator.mask, d1b.operator.mask)
    assert not torch.equal(d1.operator.mask, d2.operator.mask)


@pytest.mark.parametrize(
    ("text", "shape", "message"),
    [
        ("gaussian_blur(sigma=3)", (3, 16, 40), "image 16x40 is smaller than the 19x19"),
        ("uniform_blur(size=9,boundary=reflect)", (1, 8, 30), "image 8x30 is smaller than"),
        ("sr(factor=8)", (3, 20, 16), "multiples of 8"),
        ("inpaint_boxes(size=20)", (3, 16, 16), "16x16 is smaller than the 20x20 box"),
        ("inpaint_box(top=10,left=0,height=8,width=4)", (3, 16, 16), "does not fit"),
        ("colorise", (1, 16, 16), "3 channels"),
    ],
)
def test_build_errors_name_the_sizes(text, shape, message):
    with pytest.raises(ShapeError, match=message):
        parse(text).build(shape, torch.Generator())


def test_build_from_kernel_and_mask_files(tmp_path):
    import numpy as np

    np.save(tmp_path / "psf.npy", np.ones((3, 5)))
    np.save(tmp_path / "mask.npy", np.eye(8))
    spec = DegradationSpec.create("kernel_blur", {"path": str(tmp_path / "psf.npy")})
    op = spec.build((1, 8, 8), torch.Generator()).operator
    assert op.kernel.shape == (3, 5) and float(op.kernel.sum()) == pytest.approx(1.0)
    spec = DegradationSpec.create("inpaint_mask", {"path": str(tmp_path / "mask.npy")})
    assert int(spec.build((1, 8, 8), torch.Generator()).operator.mask.sum()) == 8
    with pytest.raises(ShapeError, match="image 9x8 does not match the 8x8"):
        spec.build((1, 9, 8), torch.Generator())
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        parse("kernel_blur(path=nope.fits)").build((1, 8, 8), torch.Generator())
