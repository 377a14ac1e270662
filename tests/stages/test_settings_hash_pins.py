"""Settings hashes are the keys of restored images and calibrations in every user's store:
a refactor must not move them. These were computed with the code of ad8a0bd (before the
stages layer) and of the commit that introduced it; both gave the same values. The configs
are written in RestoreConfig's flat form (``sampler=``, ``adapt_steps=``...), which it
still accepts; tests/stages/test_restore_config.py checks the nested form hashes alike."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from restoreflow.compat import legacy_settings_hashes
from restoreflow.spec import RestoreOptions
from restoreflow.stages.config import RestoreConfig

D = "gaussian_blur(sigma=3)+gaussian_noise(sigma=0.05)"
PRIOR_HASH = "83606bde28e1"

PINS = {
    # the defaults of that time (DDPG, 100 steps); the default is HQS on FFDNet since
    "ae7bc4c077c55519": RestoreConfig(degradation=D, sampler="ddpg"),
    # cd76ba77ff38888e's config with dps's real option name (cd76ba77ff38888e itself: see
    # test_a_config_now_refused_still_hashes_as_pinned); this and the last three were
    # computed with the code of edcd80a (RestoreConfig a dataclass)
    "e50f4211587980ce": RestoreConfig(degradation="sr(factor=4)+gaussian_noise(sigma=0.01)",
                                      sampler="dps", steps=50, options=(("zeta_prime", 0.5),)),
    "e54ff9b823621db7": RestoreConfig(degradation=D, posterior_samples=4, tile=128, overlap=32,
                                      seed=7, tile_batch=2),
    # the flat form (edcd80a's) retrieved from the clean corpus: match_degradation=False
    # is implied there and explicit here (test_matched_retrieval_has_its_own_hash)
    "09eb07daf72e8b60": RestoreConfig(degradation=D, adapt=True, neighbours=4, adapt_steps=30,
                                      adapt_rank=8, match_degradation=False),
    "018ddbaf3ed58324": RestoreConfig(degradation=D, adapt=True, adapt_alpha=16.0, adapt_lr=1e-4,
                                      adapt_targets=("to_q", "to_v"), adapt_max_t=250,
                                      match_degradation=False),
    # 3ab8375923047883 (zeta_prime written 20.0) hashes as 20 since options are canonical:
    # test_a_float_spelled_option_keeps_its_old_hash_as_legacy
    "e9b302f7d4c7866a": RestoreConfig(degradation="sr(factor=4)+gaussian_noise(sigma=0.01)",
                                      sampler="dps", steps=50,
                                      options=(("eta", 0.5), ("zeta_prime", 20.0))),
    "64fd6dec93db69ef": RestoreConfig(degradation=D, options=(("gamma", 8),
                                                              ("step_size", "decay"))),
    "34e958e16ec6c2af": RestoreConfig(degradation=D, adapt=True, neighbours=2, adapt_steps=2,
                                      prior="x", match_degradation=False),
}


@pytest.mark.parametrize("expected", list(PINS))
def test_settings_hash_is_pinned(expected):
    cfg = PINS[expected]
    assert cfg.settings_hash(PRIOR_HASH) == expected
    assert RestoreConfig.from_dict(cfg.to_dict()).settings_hash(PRIOR_HASH) == expected


def test_a_config_now_refused_still_hashes_as_pinned():
    """cd76ba77ff38888e was pinned for dps with an option dps does not have (``zeta``, a
    typo of ``zeta_prime``): RestoreConfig now refuses it when it is built. Its fields
    still hash to the pinned value."""
    deg = "sr(factor=4)+gaussian_noise(sigma=0.01)"
    with pytest.raises(ValidationError, match="unknown option 'zeta' of sampler dps"):
        RestoreConfig(degradation=deg, sampler="dps", steps=50, options=(("zeta", 0.5),))
    unchecked = RestoreOptions.model_construct(sampler="dps", steps=50, options={"zeta": 0.5})
    cfg = RestoreConfig(degradation=deg).model_copy(update={"restore": unchecked})
    assert cfg.settings_hash(PRIOR_HASH) == "cd76ba77ff38888e"


def test_seed_and_tile_batch_do_not_change_the_hash():
    base = RestoreConfig(degradation=D, sampler="ddpg")
    assert RestoreConfig(degradation=D, seed=3, tile_batch=1).settings_hash(PRIOR_HASH) == \
        base.settings_hash(PRIOR_HASH)
    assert RestoreConfig(degradation=D, steps=99).settings_hash(PRIOR_HASH) != \
        base.settings_hash(PRIOR_HASH)


def test_matched_retrieval_has_its_own_hash():
    """Retrieving from the degraded corpus (the default) finds other neighbours than the
    clean corpus did: its restorations and calibrations must not pass for the old ones;
    without adaptation the setting is irrelevant and the hash stays."""
    old = PINS["09eb07daf72e8b60"]
    new = old.model_copy(update={"adapt": old.adapt.model_copy(
        update={"match_degradation": True})})
    assert new.settings_hash(PRIOR_HASH) != "09eb07daf72e8b60"
    nested = RestoreConfig(degradation=D, restore={"sampler": "ddpg", "steps": 100},
                           adapt={"enabled": True, "neighbours": 4, "steps": 30, "rank": 8})
    assert nested.adapt.match_degradation and nested.settings_hash(PRIOR_HASH) == \
        new.settings_hash(PRIOR_HASH)
    off = RestoreConfig(degradation=D, match_degradation=False)
    assert off.settings_hash(PRIOR_HASH) == "ae7bc4c077c55519"


def test_a_float_spelled_option_keeps_its_old_hash_as_legacy():
    """Options are stored canonical (``20.0``, ``20`` and ``"20"`` hash alike, as ``20``);
    the hash older versions gave ``zeta_prime: 20.0`` is its legacy hash, under which
    stored restorations and calibrations are still found."""
    deg = "sr(factor=4)+gaussian_noise(sigma=0.01)"
    spellings = [{"eta": 0.5, "zeta_prime": z} for z in (20.0, 20, "20", "20.0")]
    cfgs = [RestoreConfig(degradation=deg, sampler="dps", steps=50, options=o) for o in spellings]
    assert {c.settings_hash(PRIOR_HASH) for c in cfgs} == {"e9b302f7d4c7866a"}
    assert legacy_settings_hashes(cfgs[0], PRIOR_HASH) == ["3ab8375923047883"]
    # options with no integral float were hashed alike in any spelling: no legacy hash
    assert legacy_settings_hashes(PINS["e50f4211587980ce"], PRIOR_HASH) == []


def test_stored_outputs_under_a_legacy_hash_are_found(tmp_path):
    import numpy as np

    from restoreflow.settings import Settings
    from restoreflow.stages.calibrate import calibration_path, load_calibration
    from restoreflow.stages.restore import is_restored
    from restoreflow.storage.store import TileStore

    store = TileStore(str(tmp_path / "st"), Settings())
    store.create_image("restored", "a", (3, 8, 8), np.float32,
                       attrs={"collection_attrs": {"settings_hash": "3ab8375923047883"}})
    store.mark_complete("restored", "a")
    store.put_bytes(calibration_path("3ab8375923047883"),
                    b'{"settings_hash": "3ab8375923047883", "alpha": 0.1}')
    assert not is_restored(store, "a", "e9b302f7d4c7866a")
    assert is_restored(store, "a", "e9b302f7d4c7866a", legacy=["3ab8375923047883"])
    assert load_calibration(store, "e9b302f7d4c7866a") is None
    cal = load_calibration(store, "e9b302f7d4c7866a", legacy=["3ab8375923047883"])
    assert cal == {"settings_hash": "e9b302f7d4c7866a", "alpha": 0.1}
