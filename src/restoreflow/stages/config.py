"""What determines a restoration: :class:`RestoreConfig` and its settings hash.

Outputs are keyed by content: a restored image records the hash of the settings that
made it (degradation, sampler, steps, options, tiling, prior hash, adaptation), so a
rerun skips what is complete and equal and recomputes what is missing or different; a
calibration certifies exactly one hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from restoreflow.spec import DegradationSpec, RunSpec

# RestoreConfig field -> LoraSettings field
_LORA_FIELDS = {"adapt_steps": "steps", "adapt_rank": "rank", "adapt_alpha": "alpha",
                "adapt_lr": "lr", "adapt_targets": "target_modules", "adapt_max_t": "max_t"}
# left out of the settings hash as fields (they are in its "lora" entry), so the hashes of
# configurations from before these fields existed stay the same
_LORA_FIELDS_NOT_HASHED = ("adapt_alpha", "adapt_lr", "adapt_targets", "adapt_max_t")


@dataclass(frozen=True)
class RestoreConfig:
    """Everything that determines a restoration (and what a calibration certifies)."""

    degradation: str
    seed: int = 0
    sampler: str = "ddpg"
    steps: int = 100
    options: tuple[tuple[str, float | int | str | bool], ...] = ()
    tile: int = 256
    overlap: int = 64
    tile_batch: int = 4
    posterior_samples: int = 1
    prior: str | None = None
    adapt: bool = False
    neighbours: int = 8
    adapt_steps: int | None = None
    adapt_rank: int | None = None
    adapt_alpha: float | None = None
    adapt_lr: float | None = None
    adapt_targets: tuple[str, ...] | None = None
    adapt_max_t: int | None = None
    embedder: str = "efficientnet-lite0"
    index: str = "default"
    lower_q: float = 0.05
    upper_q: float = 0.95

    @classmethod
    def from_run(cls, spec: RunSpec) -> RestoreConfig:
        r, a = spec.restore, spec.adapt
        return cls(
            degradation=spec.degradation, seed=spec.seed, sampler=r.sampler, steps=r.steps,
            options=tuple(sorted(r.options.items())), tile=r.tile, overlap=r.overlap,
            tile_batch=r.tile_batch, posterior_samples=r.posterior_samples,
            prior=chosen_prior(spec.prior),
            adapt=a.enabled, neighbours=a.neighbours, adapt_steps=a.steps, adapt_rank=a.rank,
            adapt_alpha=a.alpha, adapt_lr=a.lr,
            adapt_targets=tuple(a.targets) if a.targets else None, adapt_max_t=a.max_t,
            embedder=a.embedder,
        )

    @property
    def spec(self) -> DegradationSpec:
        return DegradationSpec.parse(self.degradation)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = dict(self.options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RestoreConfig:
        targets = d.get("adapt_targets")
        return cls(**{**d, "options": tuple(sorted(dict(d.get("options") or {}).items())),
                      "adapt_targets": tuple(targets) if targets else None})

    def lora_settings(self):
        from restoreflow.models.lora import LoraSettings

        over = {name: getattr(self, field) for field, name in _LORA_FIELDS.items()
                if getattr(self, field) is not None}
        return LoraSettings(seed=self.seed, **over)

    def settings_hash(self, prior_hash: str) -> str:
        """What a calibration certifies: everything but the seed and the tile batch."""
        d = asdict(self)
        for k in ("seed", "tile_batch", "prior", *_LORA_FIELDS_NOT_HASHED):  # in d["lora"]
            d.pop(k)
        d["degradation"] = self.spec.text
        d["prior_hash"] = prior_hash
        if self.adapt:
            d["lora"] = self.lora_settings().to_dict() | {"seed": None}
        else:
            for k in ("neighbours", "adapt_steps", "adapt_rank", "embedder", "index"):
                d.pop(k)
        text = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def chosen_prior(ref: str | None) -> str | None:
    """The prior a job uses, chosen once on the driver: the run spec's or ``--prior``'s
    reference, else the ``RESTOREFLOW_PRIOR`` setting, else None (the shipped prior).
    Workers receive the choice inside the config, never re-read their environment."""
    from restoreflow.settings import get_settings

    return ref or get_settings().prior or None
