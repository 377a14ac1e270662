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
        """Parse the text form (see module docstring); raises SpecError."""
        if not isinstance(text, str) or not text.strip():
            raise _fail("empty degradation spec")
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
        op = build_operator(
            self.operator.name, self.operator.params_dict, image_shape, generator, device, dtype
        )
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


# ---------------------------------------------------------------------------------------
# Run specs: what one pipeline run does (YAML, typed, validated, hashed)
# ---------------------------------------------------------------------------------------

from typing import Annotated, Literal  # noqa: E402

from pydantic import (  # noqa: E402
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_credentials(value):
    """Refuse ``scheme://user:secret@host/...`` in a URI field: the spec is written into
    manifests and sent to Prefect as a flow parameter, so a secret in it would leak.
    The message does not repeat the value."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and "://" in item and "@" in item.split("://", 1)[1].split(
                "/", 1)[0]:
            raise ValueError("credentials in a URI are not supported (they would be recorded "
                             "in manifests and Prefect): use AWS_ACCESS_KEY_ID / "
                             "AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    return value


def _canonical_degradation(v: str) -> str:
    """A degradation field holds the canonical text of its spec (refused when invalid)."""
    try:
        return DegradationSpec.parse(v).text
    except SpecError as exc:
        raise ValueError(str(exc)) from None


# Field types shared by the run spec and restoreflow.stages.config.RestoreConfig
Seed = Annotated[int, Field(ge=0, le=2**62)]


class RestoreOptions(_Strict):
    """How to restore: the sampler with its options, steps, tiling, posterior samples
    (``restore:`` of a run spec, and ``RestoreConfig.restore``)."""

    # the sampler registry's names (tests/test_runspec.py checks they agree)
    sampler: Literal["ddpg", "ddnm", "dps", "diffpir"] = "ddpg"
    steps: int = Field(100, ge=1, le=1000, description="UNet evaluations per sample")
    tile: int = Field(256, ge=32, le=4096)
    overlap: int = Field(64, ge=0, le=2048)
    tile_batch: int = Field(4, ge=1, le=256)
    posterior_samples: int = Field(
        1, ge=1, le=64, description="J samples (J >= 2 gives uncertainty maps)"
    )
    options: dict[str, float | int | str | bool] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _options_of_the_sampler(cls, options: dict, info: ValidationInfo) -> dict:
        from restoreflow.samplers import check_options

        if "sampler" in info.data:  # else the sampler itself is refused
            check_options(info.data["sampler"], options)  # typo, type, range: refused here
        return options


class AdaptSettings(_Strict):
    """How to adapt the prior to each image (ADIR): retrieval and the LoRA settings
    (``RestoreConfig.adapt``; a run spec's ``adapt:`` adds the reference corpus)."""

    enabled: bool = False
    neighbours: int = Field(8, ge=1, le=1000)
    steps: int | None = Field(None, ge=1, le=100000)
    rank: int | None = Field(None, ge=1, le=256)
    alpha: float | None = Field(None, gt=0, le=1024)
    lr: float | None = Field(None, gt=0, le=1)
    targets: list[str] | None = Field(None, min_length=1,
                                      description="UNet module names to adapt")
    max_t: int | None = Field(None, ge=1, le=100000,
                              description="adapter only for timesteps below max_t")
    embedder: str = "efficientnet-lite0"


class AdaptOptions(AdaptSettings):
    """``adapt:`` of a run spec: the adaptation settings and the reference corpus."""

    corpus: list[str] = Field(default_factory=list, description="reference images (sources)")

    _corpus_without_credentials = field_validator("corpus")(_no_credentials)


class CalibrationOptions(_Strict):
    clean: list[str] = Field(description="clean calibration images (sources), held out")
    alpha: float = Field(0.1, gt=0, lt=1)
    min_psnr: float | None = Field(None, ge=0, le=100)
    method: Literal["residual", "cqr"] = "residual"
    pixel_epsilon: float = Field(0.1, gt=0, lt=1)
    pixel_delta: float = Field(0.1, gt=0, lt=1)

    _clean_without_credentials = field_validator("clean")(_no_credentials)


class ExportOptions(_Strict):
    format: Literal["png", "tiff", "fits"] = "png"
    out: str = "restoreflow-out"
    collections: list[str] = Field(default_factory=lambda: ["restored"])


class RunSpec(_Strict):
    """One pipeline run: ingest -> (simulate) -> retrieve -> adapt -> restore -> score ->
    export. ``hash`` is sha256 of the canonical JSON (first 16 hex digits)."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sources: list[str] = Field(min_length=1)
    store: str | None = None
    degradation: str
    simulate: bool = Field(True, description="degrade the sources (benchmark) or not (real y)")
    seed: Seed = 0
    prior: str | None = None
    restore: RestoreOptions = Field(default_factory=RestoreOptions)
    adapt: AdaptOptions = Field(default_factory=AdaptOptions)
    calibration: CalibrationOptions | None = None
    export: ExportOptions | None = None
    report: str | None = "report.html"

    _uris_without_credentials = field_validator("sources", "store", "prior")(_no_credentials)
    _degradation_canonical = field_validator("degradation")(_canonical_degradation)

    @property
    def degradation_spec(self) -> DegradationSpec:
        return DegradationSpec.parse(self.degradation)

    @property
    def hash(self) -> str:
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run spec") -> RunSpec:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise SpecError(f"{where}: " + "; ".join(_describe(e) for e in exc.errors())) from None

    @classmethod
    def from_yaml(cls, path: str) -> RunSpec:
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as exc:
            raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except RecursionError:  # e.g. "[[[[..." thousands deep: the parser recurses
            raise SpecError(f"{path}: not valid YAML (nested too deeply)") from None
        if not isinstance(data, dict):
            raise SpecError(f"{path}: a run spec is a mapping of fields, got {type(data).__name__}")
        return cls.from_dict(data, where=path).resolved(
            os.path.dirname(os.path.abspath(path)), where=path)

    def resolved(self, base: str, where: str = "run spec",
                 degradation_files: bool = True) -> RunSpec:
        """This spec with every relative local path made absolute against the directory
        ``base`` (a spec file's own directory, see :meth:`from_yaml`), so that the
        manifest it is recorded in works from any directory: sources, store,
        adapt.corpus, calibration.clean, export.out, report, the prior (when it is not
        a hub id) and, with ``degradation_files``, the degradation's files (PSF, mask;
        this changes the degradation's hash, hence its seeds). URIs and absolute paths
        are kept as they are."""
        d = self.model_dump(mode="json")
        d["sources"] = [resolve_path(s, base) for s in d["sources"]]
        d["adapt"]["corpus"] = [resolve_path(s, base) for s in d["adapt"]["corpus"]]
        if d["calibration"]:
            d["calibration"]["clean"] = [resolve_path(s, base) for s in d["calibration"]["clean"]]
        if d["store"]:
            d["store"] = resolve_path(d["store"], base)
        if d["export"]:
            d["export"]["out"] = resolve_path(d["export"]["out"], base)
        if d["report"]:
            d["report"] = resolve_path(d["report"], base)
        if d["prior"] and _local_prior(d["prior"], base):
            d["prior"] = resolve_path(d["prior"], base)
        if degradation_files:
            d["degradation"] = self.degradation_spec.with_files_resolved(base).text
        if d == self.model_dump(mode="json"):
            return self
        return type(self).from_dict(d, where=where)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _local_prior(ref: str, base: str) -> bool:
    """Whether a prior reference names a local directory rather than a hub id
    (``owner/name``): the rules of :func:`restoreflow.models.prior.resolve_model_path`,
    with a relative path taken against ``base``."""
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1 or "://" in ref:
        return "://" not in ref
    try:
        return os.path.exists(os.path.join(base, ref))
    except (ValueError, OSError):  # e.g. a NUL byte in the name
        return False


def _allowed(loc: tuple) -> str:
    model: Any = RunSpec
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return ""
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,)) if hasattr(a, "model_fields")),
                     ann)
    fields = getattr(model, "model_fields", {})
    return ", ".join(sorted(fields))


def _describe(err: dict) -> str:
    loc = tuple(p for p in err["loc"] if not isinstance(p, int))
    # a field name from the user's file may hold newlines or control characters: quote it
    where = ".".join(str(p) if str(p).isprintable() else repr(str(p))
                     for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field (allowed: {_allowed(loc)})"
    return f"{where}: {err['msg']}"
