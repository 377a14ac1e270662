"""Settings hashes are the keys of restored images and calibrations in every user's store:
a refactor must not move them. These were computed with the code of ad8a0bd (before the
stages layer) and of the commit that introduced it; both gave the same values."""

from __future__ import annotations

import pytest

from restoreflow.stages.config import RestoreConfig

D = "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)"
PRIOR_HASH = "83606bde28e1"

PINS = {
    "ae7bc4c077c55519": RestoreConfig(degradation=D),
    "cd76ba77ff38888e": RestoreConfig(degradation="sr(factor=4)+gaussian_noise(sigma=0.01)",
                                      sampler="dps", steps=50, options=(("zeta", 0.5),)),
    "e54ff9b823621db7": RestoreConfig(degradation=D, posterior_samples=4, tile=128, overlap=32,
                                      seed=7, tile_batch=2),
    "09eb07daf72e8b60": RestoreConfig(degradation=D, adapt=True, neighbours=4, adapt_steps=30,
                                      adapt_rank=8),
    "018ddbaf3ed58324": RestoreConfig(degradation=D, adapt=True, adapt_alpha=16.0, adapt_lr=1e-4,
                                      adapt_targets=("to_q", "to_v"), adapt_max_t=250),
}


@pytest.mark.parametrize("expected", list(PINS))
def test_settings_hash_is_pinned(expected):
    cfg = PINS[expected]
    assert cfg.settings_hash(PRIOR_HASH) == expected
    assert RestoreConfig.from_dict(cfg.to_dict()).settings_hash(PRIOR_HASH) == expected


def test_seed_and_tile_batch_do_not_change_the_hash():
    base = RestoreConfig(degradation=D)
    assert RestoreConfig(degradation=D, seed=3, tile_batch=1).settings_hash(PRIOR_HASH) == \
        base.settings_hash(PRIOR_HASH)
    assert RestoreConfig(degradation=D, steps=99).settings_hash(PRIOR_HASH) != \
        base.settings_hash(PRIOR_HASH)
