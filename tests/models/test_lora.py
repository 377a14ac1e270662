"""LoRA adaptation (ADIR) on a tiny random UNet: isolation, effect, round-trip, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from restoreflow.models.adapter_files import load_adapter, save_adapter
from restoreflow.models.lora import LoraSettings, adapt_prior, adapter_key, neighbour_loss
from restoreflow.models.prior import DiffusionPrior, ModelLoadError

SETTINGS = LoraSettings(rank=4, alpha=4.0, lr=1e-2, steps=30, batch_size=4, crop=16, seed=3)


@pytest.fixture()
def prior(tiny_unet):
    return DiffusionPrior.from_unet(tiny_unet(0))


@pytest.fixture()
def neighbours():
    g = torch.Generator().manual_seed(7)
    # smooth-ish random images: low-resolution noise upsampled, so there is structure to learn
    return [
        torch.nn.functional.interpolate(
            torch.rand(1, 3, 8, 10, generator=g), size=(32, 40), mode="bilinear"
        )[0]
        for _ in range(3)
    ]


@pytest.fixture()
def adapted(prior, neighbours):
    return adapt_prior(prior, neighbours, SETTINGS)


def _eps(p: DiffusionPrior) -> torch.Tensor:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return p.eps(x, torch.tensor([100, 700]))


def test_base_unchanged_and_adapter_changes_eps(prior, neighbours):
    before = {k: v.clone() for k, v in prior.unet.state_dict().items()}
    eps_before = _eps(prior)
    adapted = adapt_prior(prior, neighbours, SETTINGS)
    after = prior.unet.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not hasattr(prior.unet, "peft_config")
    assert torch.equal(_eps(prior), eps_before)
    diff = (_eps(adapted) - eps_before).abs().max()
    assert diff > 1e-3
    assert adapted.model_hash != prior.model_hash
    assert adapted.extra["lora"]["settings_hash"] == SETTINGS.hash
    assert len(adapted.extra["lora"]["losses"]) == SETTINGS.steps
    # conv layers are adapted too
    assert any("conv1" in t for t in adapted.extra["lora"]["targets"])


def test_training_loss_decreases(prior, neighbours, adapted):
    before = neighbour_loss(prior, neighbours, crop=16, seed=11)
    after = neighbour_loss(adapted, neighbours, crop=16, seed=11)
    assert after < 0.8 * before
    losses = adapted.extra["lora"]["losses"]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_same_seed_bit_identical(prior, neighbours, adapted):
    again = adapt_prior(prior, neighbours, SETTINGS)
    assert again.extra["lora"]["adapter_hash"] == adapted.extra["lora"]["adapter_hash"]
    assert torch.equal(_eps(again), _eps(adapted))
    other = adapt_prior(prior, neighbours, LoraSettings(**{**SETTINGS.to_dict(), "seed": 4}))
    assert other.extra["lora"]["adapter_hash"] != adapted.extra["lora"]["adapter_hash"]


def test_global_rng_untouched(prior, neighbours):
    state = torch.get_rng_state()
    adapt_prior(prior, neighbours, LoraSettings(rank=2, steps=1, batch_size=1, crop=16))
    assert torch.equal(torch.get_rng_state(), state)


def test_save_load_round_trip(prior, adapted, tmp_path):
    d = save_adapter(adapted, tmp_path / "adapter")
    assert sorted(p.name for p in d.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "restoreflow_adapter.json",
    ]
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["r"] == SETTINGS.rank and cfg["peft_type"] == "LORA"
    loaded = load_adapter(prior, d)
    assert torch.equal(_eps(loaded), _eps(adapted))
    assert loaded.model_hash == adapted.model_hash
    # saving again to an existing adapter keeps it
    assert save_adapter(adapted, d) == d


def test_pickle_only_adapter_refused(prior, adapted, tmp_path):
    d = save_adapter(adapted, tmp_path / "adapter")
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        load_adapter(prior, d)


def test_adapter_for_other_prior_refused(tiny_unet, neighbours, tmp_path):
    a = DiffusionPrior.from_unet(tiny_unet(0))
    a.model_hash = "a" * 64
    b = DiffusionPrior.from_unet(tiny_unet(0))
    b.model_hash = "b" * 64
    settings = LoraSettings(rank=2, steps=1, batch_size=1, crop=16)
    d = save_adapter(adapt_prior(a, neighbours, settings), tmp_path / "ad")
    with pytest.raises(ModelLoadError, match="trained on prior"):
        load_adapter(b, d)


def test_settings_validation_and_hash():
    assert LoraSettings().hash == LoraSettings().hash
    assert LoraSettings(rank=4).hash != LoraSettings().hash
    assert LoraSettings.from_dict(LoraSettings().to_dict()) == LoraSettings()
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(rank=0)
    with pytest.raises(ValueError, match="lr"):
        LoraSettings(lr=-1.0)
    adir = LoraSettings.adir()
    assert (adir.rank, adir.alpha, adir.lr, adir.steps, adir.batch_size) == (16, 8.0, 1e-4, 400, 6)


def test_adapter_key():
    k = adapter_key("img", "prior", ["a", "b"], "s")
    assert len(k) == 64 and k == adapter_key("img", "prior", ["a", "b"], "s")
    assert k != adapter_key("img", "prior", ["b", "a"], "s")
    assert k != adapter_key("img", "prior2", ["a", "b"], "s")


def test_bad_inputs(prior):
    with pytest.raises(ValueError, match="no neighbour"):
        adapt_prior(prior, [], SETTINGS)
    with pytest.raises(ValueError, match="target modules"):
        adapt_prior(prior, [torch.rand(3, 16, 16)], LoraSettings(target_modules=("nope",)))
    # grey neighbours smaller than the crop: repeated to RGB, crop shrunk to fit
    small = adapt_prior(prior, [torch.rand(1, 8, 12)], LoraSettings(rank=2, steps=1, crop=64))
    assert small.extra["lora"]["crop"] == 8


def test_adapter_below_max_t_only(prior, neighbours, tmp_path):
    """max_t: the adapted UNet below max_t, the base UNet (bit for bit) from max_t on;
    the switch survives a save / load round trip."""
    settings = LoraSettings(**{**SETTINGS.to_dict(), "max_t": 400})
    adapted = adapt_prior(prior, neighbours, settings)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (400, 700):
            assert torch.equal(adapted.eps(x, t), prior.eps(x, t))
        assert (adapted.eps(x, 100) - prior.eps(x, 100)).abs().max() > 1e-3
        mixed = adapted.eps(x, torch.tensor([100, 700]))
        assert torch.equal(mixed[1], prior.eps(x, 700)[1])
        assert torch.equal(mixed[0], adapted.eps(x, 100)[0])
    loaded = load_adapter(prior, save_adapter(adapted, tmp_path / "a"))
    with torch.no_grad():
        assert torch.equal(loaded.eps(x, torch.tensor([100, 700])), mixed)
    # settings without max_t keep the hash they had before the field existed
    assert "max_t" not in LoraSettings().to_dict()
    assert settings.hash != SETTINGS.hash
    with pytest.raises(ValueError, match="max_t"):
        LoraSettings(max_t=0)


def test_standard_peft_call_loads_the_saved_adapter(neighbours, tmp_path):
    """Issue 19: ``PeftModel.from_pretrained(UNet2DModel.from_pretrained(prior_dir),
    adapter_dir)`` loads every LoRA weight (no missing keys, lora_B not zero) and gives
    the project's own adapted prior; the config names the base prior."""
    import warnings

    from diffusers import UNet2DModel
    from peft import PeftModel
    from safetensors.torch import load_file

    from helpers import save_tiny_prior

    prior_dir = tmp_path / "prior"
    save_tiny_prior(prior_dir)
    base = DiffusionPrior.load(prior_dir)
    d = save_adapter(adapt_prior(base, neighbours, SETTINGS), tmp_path / "adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_unet = PeftModel.from_pretrained(UNet2DModel.from_pretrained(prior_dir), d)
    assert not [w for w in caught if "missing" in str(w.message).lower()]
    lora_b = [p for n, p in peft_unet.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().max() > 0 for p in lora_b)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 700])
    ours = load_adapter(base, d)
    with torch.no_grad():
        got = peft_unet.eval()(x, t).sample
        want = ours.unet(x, t).sample
        plain = base.unet(x, t).sample
    assert (got - plain).abs().max() > 1e-3  # the adapter acts
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(prior_dir.resolve())
    prov = json.loads((d / "restoreflow_adapter.json").read_text())
    assert prov["base_hash"] == base.model_hash and prov["base_model"] == str(prior_dir.resolve())
    keys = load_file(d / "adapter_model.safetensors")
    assert all(k.startswith("base_model.model.") for k in keys)


def test_adapter_in_the_old_key_layout_still_loads(prior, adapted, tmp_path):
    """Adapters cached before the peft key prefix (``<module>.lora_A.weight``) load the
    same weights and keep their adapter hash."""
    from safetensors.torch import load_file, save_file

    d = save_adapter(adapted, tmp_path / "adapter")
    weights = d / "adapter_model.safetensors"
    old = {k.removeprefix("base_model.model."): v for k, v in load_file(weights).items()}
    save_file(old, weights, metadata={"format": "pt"})
    loaded = load_adapter(prior, d)
    assert torch.equal(_eps(loaded), _eps(adapted))
    assert loaded.extra["lora"]["adapter_hash"] == adapted.extra["lora"]["adapter_hash"]
    assert loaded.model_hash == adapted.model_hash
