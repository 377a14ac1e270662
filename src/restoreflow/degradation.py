"""Degradation specs: what was done to an image, as a typed, hashable, round-tripping value.

Text form (what users type)::

    gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)
    sr(factor=4,kernel=bicubic)+gaussian_noise(sigma=0.01)
    inpaint(ratio=0.7)+gaussian_noise(sigma=0.01)
    denoise+gaussian_noise(sigma=0.1)
    motion_blur(length=15)
    kernel_blur(path=psf.fits)

At most one operator term and at most one noise term, joined by ``+`` in any order. No
operator means ``denoise`` (A = I); no noise means a noise-free ``y = A x`` (sigma_y = 0).
Values are bare (``sigma=0.05``) or double-quoted JSON strings (``path="a,b.npy"``).

The canonical text writes the operator, then the noise, each with all its parameters
(defaults filled in, sorted by name) and canonical numbers (``3``, ``0.05``, ``1e-5``),
e.g. ``gaussian_blur(boundary=circular,sigma=3,size=19)``. ``DegradationSpec.parse(s).text``
is canonical and ``parse(spec.text) == spec``; ``spec.hash`` is the first 16 hex digits of
sha256(canonical text). A spec names file paths, not file contents: the hash of
``kernel_blur(path=psf.fits)`` does not change if the file does.

The degradation of one image is ``y = noise(A x)`` with ``A`` and its random parameters
(motion kernel, masks) and the noise all drawn from one generator seeded by
``seed_for(spec.hash, seed, image_id)``, so (spec, seed, image id) fixes y bit for bit
(on a given device and dtype).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .operators.base import LinearOperator, ShapeError
from .operators.noise import NoiseModel
from .operators.registry import (
    ALIASES,
    NOISES,
    OPERATORS,
    Entry,
    ParamError,
    build_noise,
    build_operator,
)

__all__ = [
    "Degradation",
    "DegradationSpec",
    "ShapeError",
    "SpecError",
    "Term",
    "make_generator",
    "resolve_path",
    "seed_for",
]

_SPECIAL = set(",()+=\"'\\")
# parameters of operator/noise terms that name a file (relative paths are resolved
# against a run spec's directory)
FILE_PARAMS = ("path",)


def resolve_path(path: str, base: str) -> str:
    """``path`` made absolute against the directory ``base``: a relative local path
    (globs included) is joined to ``base``; URIs (``s3://``), absolute paths, ``~``
    paths and the empty string are returned unchanged; ``file://rel`` becomes
    ``file:///base/rel``."""
    if not isinstance(path, str) or not path:
        return path
    if "://" in path:
        if path.startswith("file://"):
            return "file://" + resolve_path(path[len("file://"):], base)
        return path
    if path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


class SpecError(ValueError):
    """A malformed or invalid degradation spec (one-line message)."""


def _valid_names() -> str:
    return f"valid operators: {', '.join(OPERATORS)}; valid noise: {', '.join(NOISES)}"


def _fail(msg: str, entry: Entry | None = None) -> SpecError:
    parts = [msg]
    if entry is not None:
        parts.append(f"valid parameters of {entry.name}: {entry.describe_params()}")
    parts.append(_valid_names())
    return SpecError("; ".join(parts))


def _format_value(entry: Entry, key: str, value: Any) -> str:
    s = entry.param_map[key].format(value)
    if entry.param_map[key].type is str and (
        not s or s != s.strip() or any(ch in _SPECIAL or ch.isspace() for ch in s)
    ):
        return json.dumps(s, ensure_ascii=False)
    return s


@dataclass(frozen=True)
class Term:
    """One validated term: a registry name and its canonical parameters (sorted)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def create(cls, name: str, params: Mapping[str, Any] | None = None) -> Term:
        """Validate typed parameters against the registry and fill in defaults."""
        name = ALIASES.get(name, name)
        entry = OPERATORS.get(name) or NOISES.get(name)
        if entry is None:
            raise _fail(f"unknown operator or noise {name!r}")
        try:
            canon = entry.canonical_params(dict(params or {}))
        except ParamError as e:
            raise _fail(f"{name}: {e}", entry) from None
        return cls(name, tuple(canon.items()))

    @property
    def entry(self) -> Entry:
        return OPERATORS.get(self.name) or NOISES[self.name]

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def text(self) -> str:
        if not self.params:
            return self.name
        e = self.entry
        inner = ",".join(f"{k}={_format_value(e, k, v)}" for k, v in self.params)
        return f"{self.name}({inner})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params_dict}


def _split_top(s: str, sep: str, what: str) -> list[str]:
    """Split ``s`` at ``sep`` outside parentheses and double-quoted strings."""
    parts, depth, quote, esc, cur = [], 0, False, False, []
    for ch in s:
        if quote:
            cur.append(ch)
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quote = False
            continue
        if ch == '"':
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise _fail(f"unbalanced ')' in {what} {s!r}")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if quote:
        raise _fail(f"unterminated quote in {what} {s!r}")
    if depth:
        raise _fail(f"unbalanced '(' in {what} {s!r}")
    parts.append("".join(cur))
    return parts


def _parse_term(raw: str) -> Term:
    t = raw.strip()
    if not t:
        raise _fail("empty term (check for a stray '+')")
    if "(" in t:
        name, rest = t.split("(", 1)
        name = name.strip()
        if not rest.rstrip().endswith(")"):
            raise _fail(f"text after ')' in term {t!r}")
        inner = rest.rstrip()[:-1]
    else:
        name, inner = t, ""
    key = ALIASES.get(name.lower(), name.lower())
    if not key.isidentifier():
        raise _fail(f"malformed term {t!r}")
    entry = OPERATORS.get(key) or NOISES.get(key)
    if entry is None:
        raise _fail(f"unknown operator or noise {name!r}")
    params: dict[str, Any] = {}
    if inner.strip():
        for arg in _split_top(inner, ",", f"term {t!r}"):
            if "=" not in arg:
                raise _fail(f"{key}: expected key=value, got {arg.strip()!r}", entry)
            k, v = arg.split("=", 1)
            k, v = k.strip().lower(), v.strip()
            if k not in entry.param_map:
                raise _fail(f"{key}: unknown parameter {k!r}", entry)
            if k in params:
                raise _fail(f"{key}: parameter {k!r} given twice", entry)
            if v.startswith('"'):
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    raise _fail(f"{key}: bad quoted value {v} for {k!r}", entry) from None
            try:
                params[k] = entry.param_map[k].parse_text(v)
            except ParamError as e:
                raise _fail(f"{key}: {e}", entry) from None
    return Term.create(key, params)


@dataclass(frozen=True)
class DegradationSpec:
    """A validated degradation: one operator term and an optional noise term."""

    operator: Term
    noise: Term | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.operator, Term) or self.operator.kind != "operator":
            raise _fail(f"{self.operator!r} is not an operator term")
        if self.noise is not None and (
            not isinstance(self.noise, Term) or self.noise.kind != "noise"
        ):
            raise _fail(f"{self.noise!r} is not a noise term")
        for term in (self.operator, self.noise):
            # a Term built directly (not via Term.create) must already be canonical
            if term is not None and Term.create(term.name, term.params_dict) != term:
                raise _fail(f"term {term!r} is not canonical: use Term.create")

    # ---- construction ----
    @classmethod
    def parse(cls, text: str) -> DegradationSpec:
        """Parse the text form (see module docstring); raises SpecError. A text is parsed
        once per process (specs are immutable; the driver and each worker batch ask for
        the same few texts many times)."""
        if not isinstance(text, str) or not text.strip():
            raise _fail("empty degradation spec")
        return _parsed(text)

    @classmethod
    def _parse_text(cls, text: str) -> DegradationSpec:
        ops: list[Term] = []
        noises: list[Term] = []
        for raw in _split_top(text, "+", "spec"):
            term = _parse_term(raw)
            (ops if term.kind == "operator" else noises).append(term)
        if len(ops) > 1:
            raise _fail(
                f"more than one operator term ({', '.join(t.name for t in ops)}) in {text!r}"
            )
        if len(noises) > 1:
            raise _fail(
                f"more than one noise term ({', '.join(t.name for t in noises)}) in {text!r}"
            )
        op = ops[0] if ops else Term.create("denoise")
        return cls(op, noises[0] if noises else None)

    @classmethod
    def create(
        cls,
        operator: str,
        params: Mapping[str, Any] | None = None,
        noise: str | None = None,
        noise_params: Mapping[str, Any] | None = None,
    ) -> DegradationSpec:
        """Build from names and typed parameters, e.g. ``create("sr", {"factor": 4})``."""
        op = Term.create(operator, params)
        nz = Term.create(noise, noise_params) if noise is not None else None
        if op.kind != "operator":
            raise _fail(f"{operator!r} is a noise model, not an operator")
        if nz is not None and nz.kind != "noise":
            raise _fail(f"{noise!r} is an operator, not a noise model")
        return cls(op, nz)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DegradationSpec:
        """Inverse of :meth:`to_dict`; also accepts ``{"text": ...}`` alone. When both
        structure and text/hash are present they must agree."""
        if not isinstance(d, Mapping):
            raise _fail(f"a degradation spec dict is needed, got {type(d).__name__}")
        if "operator" in d:
            op = d["operator"]
            nz = d.get("noise")
            if not isinstance(op, Mapping) or (nz is not None and not isinstance(nz, Mapping)):
                raise _fail("'operator' and 'noise' must be {name, params} objects")
            spec = cls.create(
                op.get("name", ""),
                op.get("params") or {},
                None if nz is None else nz.get("name", ""),
                None if nz is None else (nz.get("params") or {}),
            )
            if "text" in d and cls.parse(d["text"]) != spec:
                raise _fail(f"text {d['text']!r} disagrees with the operator/noise fields")
        elif "text" in d:
            spec = cls.parse(d["text"])
        else:
            raise _fail("a degradation spec dict needs 'operator' or 'text'")
        if "hash" in d and d["hash"] != spec.hash:
            raise _fail(f"hash {d['hash']!r} does not match the spec (expected {spec.hash})")
        return spec

    # ---- views ----
    @property
    def text(self) -> str:
        """Canonical text: operator then noise, parameters sorted, defaults filled in."""
        return self.operator.text + ("" if self.noise is None else "+" + self.noise.text)

    @property
    def hash(self) -> str:
        """First 16 hex digits of sha256 of the canonical text."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def sigma_y(self) -> float:
        """Effective Gaussian noise std of the noise term (0 without noise)."""
        return 0.0 if self.noise is None else self.noise_model().sigma_y

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "hash": self.hash,
            "operator": self.operator.to_dict(),
            "noise": None if self.noise is None else self.noise.to_dict(),
        }

    def __str__(self) -> str:
        return self.text

    @property
    def task(self) -> str:
        """The restoration task kind of the operator (deblur, sr, inpaint, denoise, other)."""
        from restoreflow.operators.registry import OPERATOR_TASKS

        return OPERATOR_TASKS.get(self.operator.name, "other")

    def noise_model(self) -> NoiseModel | None:
        if self.noise is None:
            return None
        return build_noise(self.noise.name, self.noise.params_dict)

    def files(self) -> list[tuple[str, str]]:
        """``(term name, path)`` of every file the spec reads (PSFs, masks: the ``path``
        parameters), in term order."""
        return [(t.name, str(t.params_dict[k])) for t in (self.operator, self.noise)
                if t is not None for k in FILE_PARAMS if k in t.params_dict]

    def with_files_resolved(self, base: str) -> DegradationSpec:
        """The same spec with relative file paths made absolute against ``base``.

        Note that this changes the canonical text, so the hash (and the seeds drawn
        from it): a spec names file paths, not file contents."""
        terms = []
        for t in (self.operator, self.noise):
            if t is None or not any(k in t.params_dict for k in FILE_PARAMS):
                terms.append(t)
                continue
            params = {k: (resolve_path(v, base) if k in FILE_PARAMS else v)
                      for k, v in t.params_dict.items()}
            terms.append(Term.create(t.name, params))
        return type(self)(terms[0], terms[1])

    # ---- building ----
    def build(
        self,
        image_shape: tuple[int, int, int],
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Degradation:
        """The degradation for images of shape ``(C, H, W)``.

        Random operator parameters are drawn from ``generator`` (then pass the same
        generator to ``Degradation.apply`` for the noise). Raises ShapeError (a
        ValueError) naming the sizes when the image does not fit (smaller than the
        kernel, H or W not a multiple of the SR factor, mask of another size), and
        FileNotFoundError / ValueError for bad kernel or mask files.
        """
        from restoreflow.storage.operator_files import read_operator_file

        op = build_operator(self.operator.name, self.operator.params_dict, image_shape,
                            generator, device, dtype, read_file=read_operator_file)
        noise = self.noise_model()
        return Degradation(
            spec=self, operator=op, noise=noise, sigma_y=0.0 if noise is None else noise.sigma_y
        )


@dataclass(frozen=True, eq=False)
class Degradation:
    """A built degradation ``y = noise(A x)``."""

    spec: DegradationSpec
    operator: LinearOperator
    noise: NoiseModel | None
    sigma_y: float

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``y = noise(A x)`` with the noise drawn from ``generator``."""
        ax = self.operator.A(x)
        return ax if self.noise is None else self.noise.sample(ax, generator)


def seed_for(spec_hash: str, seed: int, image_id: str) -> int:
    """A 63-bit seed from sha256 of ``"{spec_hash}:{seed}:{image_id}"``."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    digest = hashlib.sha256(f"{spec_hash}:{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def make_generator(
    spec: DegradationSpec, seed: int, image_id: str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator seeded with ``seed_for(spec.hash, seed, image_id)``.

    Use it for ``spec.build(...)`` and then ``degradation.apply(...)``, in that order.
    """
    g = torch.Generator(device=device)
    g.manual_seed(seed_for(spec.hash, seed, image_id))
    return g


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> DegradationSpec:
    return DegradationSpec._parse_text(text)
