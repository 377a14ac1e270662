"""What determines a restoration: :class:`RestoreConfig` and its settings hash.

Outputs are keyed by content: a restored image records the hash of the settings that
made it (degradation, sampler, steps, options, tiling, prior hash, adaptation), so a
rerun skips what is complete and equal and recomputes what is missing or different; a
calibration certifies exactly one hash.

A ``RestoreConfig`` is built once, on the driver, from CLI flags or a run spec
(:meth:`RestoreConfig.from_run`), validated there (an unknown sampler option, a bad step
count... is refused before any work), and passed as one parameter through flows and
tasks. Its sections are the run spec's own models (``restore`` is
:class:`~restoreflow.spec.RestoreOptions`, ``adapt`` is
:class:`~restoreflow.spec.AdaptSettings`), so a field has one name in a spec and here.
Its wire form (Prefect parameters, manifests) is ``model_dump(mode="json")`` /
``model_validate``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from restoreflow.degradation import DegradationSpec
from restoreflow.spec import (
    AdaptSettings,
    RestoreOptions,
    RunSpec,
    Seed,
    canonical_degradation,
    no_credentials,
    with_default_method,
)


class RestoreConfig(BaseModel):
    """Everything that determines a restoration (and what a calibration certifies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    degradation: str = Field(description="degradation spec (canonical text)")
    seed: Seed = 0
    prior: str | None = Field(None, description="prior reference; None: the shipped prior")
    restore: RestoreOptions = Field(default_factory=RestoreOptions)
    adapt: AdaptSettings = Field(default_factory=AdaptSettings)
    index: str = Field("default", min_length=1, description="reference index to retrieve from")
    lower_q: float = Field(0.05, gt=0, lt=1, description="posterior-sample quantiles")
    upper_q: float = Field(0.95, gt=0, lt=1)

    _degradation_canonical = field_validator("degradation")(canonical_degradation)
    _default_method = model_validator(mode="before")(with_default_method)
    _prior_without_credentials = field_validator("prior")(no_credentials)

    @model_validator(mode="before")
    @classmethod
    def _from_flat(cls, data: Any) -> Any:
        """Accept the flat form of older manifests (:func:`restoreflow.compat.from_flat`)."""
        from restoreflow.compat import from_flat

        return from_flat(data)

    @model_validator(mode="after")
    def _quantiles_in_order(self) -> RestoreConfig:
        if not self.lower_q < self.upper_q:
            raise ValueError(f"lower_q={self.lower_q} must be below upper_q={self.upper_q}")
        return self

    @classmethod
    def from_run(cls, spec: RunSpec) -> RestoreConfig:
        cfg = cls(degradation=spec.degradation, seed=spec.seed, prior=chosen_prior(spec.prior),
                  restore=spec.restore,
                  adapt=AdaptSettings(**spec.adapt.model_dump(exclude={"corpus"})))
        return cfg.checked_adaptation()

    def with_chosen_prior(self) -> RestoreConfig:
        """This config with its prior chosen on the driver (see :func:`chosen_prior`)."""
        prior = chosen_prior(self.prior)
        cfg = self if prior == self.prior else self.model_copy(update={"prior": prior})
        return cfg.checked_adaptation()

    def checked_adaptation(self) -> RestoreConfig:
        """Adaptation (LoRA through peft) adapts a diffusion UNet prior; a denoiser prior
        (ffdnet, hybrid, a denoiser weight file) with ``adapt.enabled`` is refused here,
        before any work (ValueError naming the fix)."""
        from restoreflow.models.priors import adaptation_refusal

        why = adaptation_refusal(self.prior) if self.adapt.enabled else None
        if why:
            raise ValueError(f"adapt: {why}")
        return self

    @property
    def spec(self) -> DegradationSpec:
        return DegradationSpec.parse(self.degradation)

    def to_dict(self) -> dict:
        """The wire form, ``model_dump(mode="json")``."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict) -> RestoreConfig:
        """From the wire form, or from the flat form of older manifests."""
        return cls.model_validate(d)

    @property
    def retrieval_index(self) -> str:
        """The index neighbours are retrieved from: the corpus degraded like this run's
        images (``adapt.match_degradation``, the default) or the clean corpus."""
        from restoreflow.retrieval.stored import matched_index_name

        if self.adapt.match_degradation:
            return matched_index_name(self.index, self.spec.hash)
        return self.index

    def lora_settings(self):
        from restoreflow.models.lora import LoraSettings

        a = self.adapt
        over = {"steps": a.steps, "rank": a.rank, "alpha": a.alpha, "lr": a.lr,
                "target_modules": tuple(a.targets) if a.targets else None, "max_t": a.max_t}
        return LoraSettings(seed=self.seed, **{k: v for k, v in over.items() if v is not None})

    def settings_hash(self, prior_hash: str, options: dict | None = None) -> str:
        """What a calibration certifies: everything but the seed, the tile batch and the
        prior's reference (its hash instead). The hashed JSON keeps the flat names it has
        always had, so the hashes of stored outputs and calibrations stay the same.
        ``options``: the sampler options as spelled otherwise (for the hashes older
        versions gave, :func:`restoreflow.compat.legacy_settings_hashes`)."""
        r, a = self.restore, self.adapt
        opts = r.options if options is None else options
        d: dict[str, Any] = {
            "degradation": self.spec.text, "sampler": r.sampler, "steps": r.steps,
            "options": sorted(opts.items()), "tile": r.tile, "overlap": r.overlap,
            "posterior_samples": r.posterior_samples, "adapt": a.enabled,
            "lower_q": self.lower_q, "upper_q": self.upper_q, "prior_hash": prior_hash,
        }
        if a.enabled:  # the other LoRA settings are in the "lora" entry
            d |= {"neighbours": a.neighbours, "adapt_steps": a.steps, "adapt_rank": a.rank,
                  "embedder": a.embedder, "index": self.index,
                  "lora": self.lora_settings().to_dict() | {"seed": None}}
            if a.match_degradation:  # other neighbours than the clean-corpus retrieval
                d["retrieval"] = "degraded corpus"
        text = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def chosen_prior(ref: str | None, settings=None) -> str | None:
    """The prior a job uses, chosen once on the driver: the run spec's or ``--prior``'s
    reference, else the ``RESTOREFLOW_PRIOR`` setting (of ``settings``, default: the
    process's), else None (the default prior). Workers receive the choice inside the
    config, never re-read their environment."""
    if settings is None:
        from restoreflow.settings import get_settings

        settings = get_settings()
    return ref or settings.prior or None
