"""Registry of named operators and noise models.

Each :class:`Entry` maps a name used in degradation specs (``gaussian_blur``, ``sr``, ...)
to a constructor, with its parameters (type, default, allowed range) and
``example_params`` that the property tests run every operator with. The spec parser
(``restoreflow.degradation``) validates against this registry, so it is the single source of
truth for names, parameters and ranges.

Operator builders have the signature ``build(params, image_shape, generator)`` with
``image_shape = (C, H, W)``; noise builders ``build(params)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .base import LinearOperator, ShapeError
from .blur import BOUNDARIES, Blur, GaussianBlur, MotionBlur, UniformBlur
from .inpaint import Inpainting
from .kernels import MAX_KERNEL_SIZE, gaussian_size
from .noise import GaussianNoise, NoiseModel, PoissonGaussianNoise, PoissonNoise
from .simple import Colorise, Identity
from .superres import FACTORS, BicubicDownsample, BoxDownsample


class ParamError(ValueError):
    """A parameter value is missing, unknown, of the wrong type or out of range."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


def format_float(v: float) -> str:
    """Canonical text of a float: shortest round-trip repr, integers without ``.0``,
    exponents without ``+`` or leading zeros (``1e-05`` -> ``1e-5``)."""
    if v == int(v) and abs(v) < 1e16:
        return str(int(v))
    r = repr(float(v))
    if "e" in r:
        mant, exp = r.split("e")
        r = f"{mant}e{int(exp)}"
    return r


@dataclass(frozen=True)
class Param:
    """One parameter: type, default (``REQUIRED`` if none) and allowed values."""

    name: str
    type: type
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple | None = None
    odd: bool = False
    derived: Callable[[dict], Any] | None = None  # default computed from other params
    derived_doc: str = ""
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and self.derived is None

    def allowed(self) -> str:
        """The allowed values, e.g. ``float in (0, 100]`` or ``one of box|bicubic``."""
        if self.choices is not None:
            return "one of " + "|".join(str(c) for c in self.choices)
        tname = {int: "int", float: "float", str: "str"}[self.type]
        if self.odd:
            tname = "odd " + tname
        lo, hi = self.minimum, self.maximum
        fmt = format_float if self.type is float else str
        if lo is not None and hi is not None:
            lb = "(" if self.min_exclusive else "["
            rb = ")" if self.max_exclusive else "]"
            return f"{tname} in {lb}{fmt(lo)}, {fmt(hi)}{rb}"
        if lo is not None:
            return f"{tname} {'>' if self.min_exclusive else '>='} {fmt(lo)}"
        if hi is not None:
            return f"{tname} {'<' if self.max_exclusive else '<='} {fmt(hi)}"
        return tname

    def describe(self) -> str:
        """E.g. ``sigma (float > 0, required)``."""
        rng = self.allowed()
        if self.derived is not None:
            dflt = f"default {self.derived_doc}"
        elif self.default is REQUIRED:
            dflt = "required"
        else:
            dflt = f"default {self.format(self.default)}"
        return f"{self.name} ({rng}, {dflt})"

    def check(self, value: Any) -> Any:
        """Validate a typed value (ints accepted for floats); return it canonicalised."""
        t = self.type
        if isinstance(value, bool) or not (
            isinstance(value, t) or (t is float and isinstance(value, int))
        ):
            raise ParamError(f"{self.name}={value!r} has the wrong type: expected {t.__name__}")
        if t is float:
            value = float(value)
            if not math.isfinite(value):
                raise ParamError(f"{self.name}={value} must be a finite number")
        if t is str:
            value = value if self.choices is None else value.lower()
            if not value.strip():
                raise ParamError(f"{self.name} must not be empty")
        if self.choices is not None:
            if value not in self.choices:
                raise ParamError(
                    f"{self.name}={self.format(value)} is not allowed: expected one of "
                    + "|".join(str(c) for c in self.choices)
                )
            return value
        lo, hi = self.minimum, self.maximum
        bad = (
            (lo is not None and (value <= lo if self.min_exclusive else value < lo))
            or (hi is not None and (value >= hi if self.max_exclusive else value > hi))
            or (self.odd and value % 2 == 0)
        )
        if bad:
            raise ParamError(
                f"{self.name}={self.format(value)} is out of range (allowed: {self.allowed()})"
            )
        return value

    def parse_text(self, text: str) -> Any:
        """Convert the text form of a value and validate it (strings are kept verbatim)."""
        s = text.strip()
        if self.type is int:
            try:
                value: Any = int(s, 10)
            except ValueError:
                raise ParamError(f"{self.name}={text!r} is not an integer") from None
        elif self.type is float:
            try:
                value = float(s)
            except ValueError:
                raise ParamError(f"{self.name}={text!r} is not a number") from None
        else:
            value = text if self.choices is None else s.lower()
        return self.check(value)

    def format(self, value: Any) -> str:
        if self.type is float:
            return format_float(float(value))
        return str(value)


@dataclass(frozen=True)
class Entry:
    """A named operator or noise model of the registry."""

    name: str
    kind: Literal["operator", "noise"]
    params: tuple[Param, ...]
    build: Callable[..., Any]
    example_params: tuple[dict, ...] = ()
    random: bool = False  # draws from the generator when built
    doc: str = ""
    # (params, y shape (C, h, w)) -> shape (C, H, W) of the x that A maps onto y;
    # None: the same shape (A keeps the size and the channels)
    x_shape_from_y: Callable[[dict, tuple[int, int, int]], tuple[int, int, int]] | None = None
    # what the ``path`` parameter names ("kernel", "mask"): read by the caller's reader
    reads: str | None = None
    param_map: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_map", {p.name: p for p in self.params})

    def x_shape(self, params: Mapping[str, Any], y_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape (C, H, W) of the unknown image for a measurement of shape (C, h, w)."""
        y_shape = tuple(int(s) for s in y_shape)
        if self.x_shape_from_y is None:
            return y_shape
        return tuple(self.x_shape_from_y(self.canonical_params(params), y_shape))

    def describe_params(self) -> str:
        if not self.params:
            return f"{self.name} takes no parameters"
        return ", ".join(p.describe() for p in self.params)

    def canonical_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate typed values, fill in defaults; returns a dict sorted by name."""
        unknown = sorted(set(params) - set(self.param_map))
        if unknown:
            raise ParamError(f"unknown parameter {unknown[0]!r}")
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in params:
                out[p.name] = p.check(params[p.name])
            elif p.default is not REQUIRED:
                out[p.name] = p.default
            elif p.derived is None:
                raise ParamError(f"missing required parameter {p.name!r}")
        for p in self.params:
            if p.name not in out and p.derived is not None:
                out[p.name] = p.check(p.derived(out))
        return dict(sorted(out.items()))


def _boundary() -> Param:
    return Param("boundary", str, "circular", choices=BOUNDARIES, doc="image extension")


def _ksize(name: str = "size", **kw: Any) -> Param:
    return Param(name, int, minimum=1, maximum=MAX_KERNEL_SIZE, **kw)


# ---- operator builders: (params, (C, H, W), generator) -> LinearOperator (float64) ----
F64 = torch.float64


def _b_denoise(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return Identity()


def _b_colorise(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    if shape[0] != 3:
        raise ShapeError(f"colorisation needs an RGB image (3 channels), got {shape[0]}")
    return Colorise(3)


def _b_gaussian(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return GaussianBlur(p["sigma"], p["size"], p["boundary"], dtype=F64)


def _b_uniform(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return UniformBlur(p["size"], p["boundary"], dtype=F64)


def _b_motion(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return MotionBlur(p["length"], g, p["intensity"], p["boundary"], dtype=F64)


def _b_kernel(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return Blur(p["kernel"], p["boundary"], dtype=F64)


def _b_sr(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    cls = BoxDownsample if p["kernel"] == "box" else BicubicDownsample
    return cls(p["factor"])


def _b_inpaint(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return Inpainting.random_pixels(shape[1], shape[2], p["ratio"], g)


def _b_inpaint_boxes(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    h, w = shape[1:]
    if p["size"] > min(h, w):
        raise ShapeError(f"image {h}x{w} is smaller than the {p['size']}x{p['size']} box")
    return Inpainting.random_boxes(h, w, p["count"], p["size"], g)


def _b_inpaint_box(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    h, w = shape[1:]
    if p["top"] + p["height"] > h or p["left"] + p["width"] > w:
        raise ShapeError(
            f"box (top={p['top']}, left={p['left']}, height={p['height']}, "
            f"width={p['width']}) does not fit in the {h}x{w} image"
        )
    return Inpainting.box(h, w, p["top"], p["left"], p["height"], p["width"])


def _b_inpaint_mask(p: dict, shape: tuple, g: torch.Generator) -> LinearOperator:
    return Inpainting(p["mask"])


_SIGMA_BLUR = Param("sigma", float, minimum=0, maximum=100, min_exclusive=True, doc="px")

OPERATORS: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry("denoise", "operator", (), _b_denoise, ({},), doc="identity: A = I"),
        Entry("colorise", "operator", (), _b_colorise, ({},), doc="RGB -> grey (mean)",
              x_shape_from_y=lambda p, s: (3, s[1], s[2])),
        Entry(
            "gaussian_blur",
            "operator",
            (
                _SIGMA_BLUR,
                _ksize(
                    odd=True,
                    derived=lambda p: min(gaussian_size(p["sigma"]), MAX_KERNEL_SIZE),
                    derived_doc="2*ceil(3*sigma)+1",
                ),
                _boundary(),
            ),
            _b_gaussian,
            (
                {"sigma": 1.0},
                {"sigma": 2.0, "boundary": "reflect"},
                {"sigma": 0.7, "size": 3},
                {"sigma": 1.5, "boundary": "circular"},
            ),
        ),
        Entry(
            "uniform_blur",
            "operator",
            (_ksize(), _boundary()),
            _b_uniform,
            ({"size": 3}, {"size": 4, "boundary": "reflect"}, {"size": 5}),
        ),
        Entry(
            "motion_blur",
            "operator",
            (
                _ksize("length", doc="path length in px"),
                Param("intensity", float, 0.5, minimum=0, maximum=1),
                _boundary(),
            ),
            _b_motion,
            ({"length": 7}, {"length": 9, "intensity": 1.0, "boundary": "reflect"}),
            random=True,
        ),
        Entry(
            "kernel_blur",
            "operator",
            (Param("path", str, doc=".npy or FITS PSF"), _boundary()),
            _b_kernel,
            ({"path": "psf.npy"}, {"path": "psf.fits", "boundary": "reflect"}),
            reads="kernel",
        ),
        Entry(
            "sr",
            "operator",
            (
                Param("factor", int, choices=FACTORS),
                Param("kernel", str, "bicubic", choices=("bicubic", "box")),
            ),
            _b_sr,
            (
                {"factor": 2, "kernel": "box"},
                {"factor": 8, "kernel": "box"},
                {"factor": 2},
                {"factor": 4, "kernel": "bicubic"},
                {"factor": 8, "kernel": "bicubic"},
            ),
            x_shape_from_y=lambda p, s: (s[0], s[1] * p["factor"], s[2] * p["factor"]),
        ),
        Entry(
            "inpaint",
            "operator",
            (Param("ratio", float, minimum=0, maximum=1, max_exclusive=True),),
            _b_inpaint,
            ({"ratio": 0.5}, {"ratio": 0.0}, {"ratio": 0.9}),
            random=True,
            doc="random missing pixels",
        ),
        Entry(
            "inpaint_boxes",
            "operator",
            (Param("count", int, 1, minimum=1, maximum=10_000), Param("size", int, minimum=1)),
            _b_inpaint_boxes,
            ({"count": 2, "size": 5},),
            random=True,
            doc="random missing squares",
        ),
        Entry(
            "inpaint_box",
            "operator",
            (
                Param("height", int, minimum=1),
                Param("left", int, minimum=0),
                Param("top", int, minimum=0),
                Param("width", int, minimum=1),
            ),
            _b_inpaint_box,
            ({"top": 2, "left": 3, "height": 5, "width": 7},),
            doc="one missing rectangle",
        ),
        Entry(
            "inpaint_mask",
            "operator",
            (Param("path", str, doc=".npy or PNG, nonzero = keep"),),
            _b_inpaint_mask,
            ({"path": "mask.npy"}, {"path": "mask.png"}),
            reads="mask",
        ),
    ]
}

# The restoration task kind of each operator (its class's ``task``, tests check they
# agree): picks the default solver and its options before anything is built.
OPERATOR_TASKS: dict[str, str] = {
    "denoise": "denoise", "colorise": "other", "gaussian_blur": "deblur",
    "uniform_blur": "deblur", "motion_blur": "deblur", "kernel_blur": "deblur", "sr": "sr",
    "inpaint": "inpaint", "inpaint_boxes": "inpaint", "inpaint_box": "inpaint",
    "inpaint_mask": "inpaint",
}


_SIGMA_NOISE = Param("sigma", float, minimum=0, maximum=1, doc="std in [0, 1] image units")
_PHOTONS = Param("photons", float, minimum=0, maximum=1e12, min_exclusive=True)

NOISES: dict[str, Entry] = {
    e.name: e
    for e in [
        Entry(
            "gaussian_noise",
            "noise",
            (_SIGMA_NOISE,),
            lambda p: GaussianNoise(p["sigma"]),
            ({"sigma": 0.05}, {"sigma": 0.0}),
        ),
        Entry(
            "poisson_noise",
            "noise",
            (_PHOTONS,),
            lambda p: PoissonNoise(p["photons"]),
            ({"photons": 100.0},),
        ),
        Entry(
            "poisson_gaussian_noise",
            "noise",
            (_PHOTONS, _SIGMA_NOISE),
            lambda p: PoissonGaussianNoise(p["photons"], p["sigma"]),
            ({"photons": 50.0, "sigma": 0.01},),
        ),
    ]
}

#: Accepted alternative spellings -> canonical names.
ALIASES: dict[str, str] = {
    "colorize": "colorise",
    "identity": "denoise",
    "superres": "sr",
    "super_resolution": "sr",
}


def get_entry(name: str) -> Entry:
    """The operator or noise entry called ``name`` (aliases accepted); KeyError if none."""
    name = ALIASES.get(name, name)
    if name in OPERATORS:
        return OPERATORS[name]
    if name in NOISES:
        return NOISES[name]
    raise KeyError(name)


def build_operator(
    name: str,
    params: Mapping[str, Any],
    image_shape: tuple[int, int, int],
    generator: torch.Generator,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    read_file: Callable[[str, str], torch.Tensor] | None = None,
) -> LinearOperator:
    """Build a registered operator for images of shape ``(C, H, W)``.

    Random parameters (kernels, masks) are drawn from ``generator``; an operator that
    names a file (a PSF, a mask) gets its array from ``read_file(kind, path)``
    (:func:`restoreflow.storage.operator_files.read_operator_file`). Raises ParamError
    for bad parameters and ShapeError when the image does not fit the operator.
    """
    entry = OPERATORS[ALIASES.get(name, name)]
    p = entry.canonical_params(params)
    if entry.reads is not None:
        if read_file is None:
            raise ParamError(f"{entry.name} reads a {entry.reads} file: give read_file")
        p = {**p, entry.reads: read_file(entry.reads, p["path"])}
    if len(image_shape) != 3:
        raise ShapeError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    shape = tuple(int(s) for s in image_shape)
    op = entry.build(p, shape, generator)
    op.y_shape((1, *shape))  # fails early with a ShapeError naming the sizes
    return op.to(device=device, dtype=dtype)


def build_noise(name: str, params: Mapping[str, Any]) -> NoiseModel:
    """Build a registered noise model."""
    entry = NOISES[name]
    return entry.build(entry.canonical_params(params))
