"""Run specs: what one pipeline run does, as YAML that is typed, validated and hashed.

A run spec (:class:`RunSpec`) names the sources, the store, the degradation (its
canonical text, see :mod:`restoreflow.degradation`), the seed and prior, and the
options of each stage: ``restore:`` (:class:`RestoreOptions`), ``adapt:``
(:class:`AdaptOptions`), ``calibration:`` (:class:`CalibrationOptions`), ``export:``
(:class:`ExportOptions`) and ``report:``. Unknown fields and bad values are refused with
a :class:`SpecError` naming the field; relative paths are resolved against the spec
file's directory (:meth:`RunSpec.resolved`). ``RunSpec.hash`` is the first 16 hex digits
of sha256 of the canonical JSON.

``DegradationSpec`` and ``SpecError`` live in :mod:`restoreflow.degradation`; they are
imported here (a run spec's degradation and its errors) and may be imported from here.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .degradation import DegradationSpec, SpecError, resolve_path
from .errors import pydantic_message
from .samplers import (
    DEFAULT_METHOD,
    DEFAULT_SAMPLER,
    SamplerName,
    canonical_options,
    default_steps,
)

__all__ = [
    "AdaptOptions",
    "AdaptSettings",
    "CalibrationOptions",
    "DegradationSpec",
    "ExportOptions",
    "RestoreOptions",
    "RunSpec",
    "Seed",
    "SpecError",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def no_credentials(value):
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


def canonical_degradation(v: str) -> str:
    """A degradation field holds the canonical text of its spec (refused when invalid)."""
    try:
        return DegradationSpec.parse(v).text
    except SpecError as exc:
        raise ValueError(str(exc)) from None


def with_default_method(data: Any) -> Any:
    """A run spec's / RestoreConfig's raw fields with the task's default solver and steps
    (:data:`restoreflow.samplers.DEFAULT_METHOD`) where ``restore`` names no sampler; a
    ``restore`` given as a model is left as it is (it was resolved when it was made)."""
    if not isinstance(data, dict) or not isinstance(data.get("degradation"), str):
        return data
    restore = data.get("restore") or {}
    if not isinstance(restore, dict) or restore.get("sampler") is not None:
        return data
    try:
        task = DegradationSpec.parse(data["degradation"]).task
    except SpecError:
        return data  # refused by the degradation field
    sampler, steps = DEFAULT_METHOD.get(task, DEFAULT_METHOD["other"])
    filled = {**restore, "sampler": sampler}
    if filled.get("steps") is None:
        filled["steps"] = steps
    return {**data, "restore": filled}


# Field types shared by the run spec and restoreflow.stages.config.RestoreConfig
Seed = Annotated[int, Field(ge=0, le=2**62)]


class RestoreOptions(_Strict):
    """How to restore: the sampler with its options, steps, tiling, posterior samples
    (``restore:`` of a run spec, and ``RestoreConfig.restore``)."""

    sampler: SamplerName = DEFAULT_SAMPLER
    steps: int = Field(None, ge=1, le=1000, validate_default=False,
                       description="prior evaluations per sample (default: the sampler's)")
    tile: int = Field(256, ge=32, le=4096)
    overlap: int = Field(64, ge=0, le=2048)
    tile_batch: int = Field(4, ge=1, le=256)
    posterior_samples: int = Field(
        1, ge=1, le=64, description="J samples (J >= 2 gives uncertainty maps)"
    )
    options: dict[str, float | int | str | bool] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sampler_default_steps(cls, data: Any) -> Any:
        """No ``steps`` (or None): the sampler's own default (its signature's)."""
        if isinstance(data, dict) and data.get("steps") is None:
            sampler = data.get("sampler", cls.model_fields["sampler"].default)
            if isinstance(sampler, str):
                try:
                    data = {**data, "steps": default_steps(sampler)}
                except ValueError:
                    pass  # the sampler itself is refused by its field
        return data

    @field_validator("options")
    @classmethod
    def _options_of_the_sampler(cls, options: dict, info: ValidationInfo) -> dict:
        """The sampler's own options model validates them (a typo, a type or a range is
        refused here, before any work) and they are kept coerced and canonical: one
        settings hash whatever their spelling (``8``, ``8.0``, ``"8"``)."""
        if "sampler" not in info.data:
            return options  # the sampler itself is refused
        return canonical_options(info.data["sampler"], options)

    @classmethod
    def for_task(cls, task: str, **fields: Any) -> RestoreOptions:
        """The default solver and steps of ``task`` (:data:`DEFAULT_METHOD`), with
        ``fields`` set over them."""
        sampler, steps = DEFAULT_METHOD.get(task, DEFAULT_METHOD["other"])
        if "sampler" in fields and fields["sampler"] != sampler:
            steps = None  # another sampler's own default
        return cls(**{"sampler": sampler, "steps": steps, **fields})


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
    match_degradation: bool = Field(
        True, description="retrieve against the corpus degraded like the image (same "
        "operator and noise, each reference its own draw): blurred photos then find photos, "
        "not star fields (benchmarks/results/explore_retrieval_degraded.md); false: against "
        "the clean corpus")


class AdaptOptions(AdaptSettings):
    """``adapt:`` of a run spec: the adaptation settings and the reference corpus."""

    corpus: list[str] = Field(default_factory=list, description="reference images (sources)")

    _corpus_without_credentials = field_validator("corpus")(no_credentials)


class CalibrationOptions(_Strict):
    clean: list[str] = Field(description="clean calibration images (sources), held out")
    alpha: float = Field(0.1, gt=0, lt=1)
    min_psnr: float | None = Field(None, ge=0, le=100)
    method: Literal["full", "residual", "cqr"] = Field(
        "full", description="the PSNR/SSIM lower bound: full conformal ridge regression "
        "on every calibration source (full), or split conformal (half the sources fit a "
        "ridge regression (residual) or a quantile regression (cqr), half calibrate it)")
    pixel_epsilon: float = Field(0.1, gt=0, lt=1)
    pixel_delta: float = Field(0.1, gt=0, lt=1)
    pixel_scale: Literal["local", "spread", "constant"] = Field(
        "local", description="per-pixel intervals widened by lambda times: the posterior "
        "samples' spread around the pixel and over the image (local, sqrt(G*(u - l) * "
        "mean(u - l)) + pixel_floor), their spread at the pixel (spread, u - l + "
        "pixel_floor), or a constant")
    pixel_floor: float | None = Field(
        None, gt=0, lt=1, description="the spread and local scales' floor (default 0.02 "
        "for spread, 0.001 for local)")
    pixel_bound: Literal["wsr", "hb"] = Field(
        "wsr", description="the risk bound that certifies the per-pixel intervals: "
        "Waudby-Smith-Ramdas betting (wsr: adapts to how much the images' miscoverage "
        "varies, narrower intervals) or Hoeffding-Bentkus (hb: assumes the worst variance)")
    group_by: str = Field(
        "image", pattern=r"^(image|folder|metadata:.+)$",
        description="what makes calibration images exchangeable units (sources): each "
        "image, the folder it came from (several crops of one photo in one folder), or a "
        "metadata key (metadata:OBJECT, a FITS header keyword)")

    _clean_without_credentials = field_validator("clean")(no_credentials)


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

    _uris_without_credentials = field_validator("sources", "store", "prior")(no_credentials)
    _degradation_canonical = field_validator("degradation")(canonical_degradation)
    _default_method = model_validator(mode="before")(with_default_method)

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
        return cls.from_dict(data, where=path).resolved(os.path.dirname(os.path.abspath(path)))

    def resolved(self, base: str, degradation_files: bool = True) -> RunSpec:
        """This spec with every relative local path made absolute against the directory
        ``base`` (a spec file's own directory, see :meth:`from_yaml`), so that the
        manifest it is recorded in works from any directory: sources, store,
        adapt.corpus, calibration.clean, export.out, report, the prior (when it is not
        a hub id) and, with ``degradation_files``, the degradation's files (PSF, mask;
        this changes the degradation's hash, hence its seeds). URIs and absolute paths
        are kept as they are."""
        def paths(items: list[str]) -> list[str]:
            return [resolve_path(s, base) for s in items]

        update: dict[str, Any] = {"sources": paths(self.sources),
                                  "adapt": self.adapt.model_copy(
                                      update={"corpus": paths(self.adapt.corpus)})}
        if self.calibration:
            update["calibration"] = self.calibration.model_copy(
                update={"clean": paths(self.calibration.clean)})
        if self.store:
            update["store"] = resolve_path(self.store, base)
        if self.export:
            update["export"] = self.export.model_copy(
                update={"out": resolve_path(self.export.out, base)})
        if self.report:
            update["report"] = resolve_path(self.report, base)
        if self.prior and _local_prior(self.prior, base):
            update["prior"] = resolve_path(self.prior, base)
        if degradation_files:
            update["degradation"] = self.degradation_spec.with_files_resolved(base).text
        # paths made absolute and a canonical degradation text: valid as they are, so the
        # spec is not validated again
        resolved = self.model_copy(update=update)
        return self if resolved == self else resolved

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _local_prior(ref: str, base: str) -> bool:
    """Whether a prior reference names a local directory rather than a hub id
    (``owner/name``): the rules of :func:`restoreflow.models.prior.resolve_model_path`,
    with a relative path taken against ``base``. Prior names (``ffdnet``, ``unet``,
    ``hybrid``) are not paths."""
    from restoreflow.models.priors import PRIOR_NAMES

    if ref in PRIOR_NAMES:
        return False
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
    return f"{where}: {pydantic_message(err)}"
