"""Loading a diffusers UNet through the user code path; safety; hashing; x0/eps algebra."""

from __future__ import annotations

import pickle

import pytest
import torch

from restoreflow.models.prior import DiffusionPrior, ModelLoadError, hash_model_dir


@pytest.fixture()
def saved_prior(tmp_path, tiny_unet):
    prior = DiffusionPrior.from_unet(tiny_unet())
    h = prior.save_pretrained(tmp_path / "m")
    return prior, tmp_path / "m", h


def test_load_matches_in_memory_model(saved_prior):
    prior, path, h = saved_prior
    loaded = DiffusionPrior.load(path)
    x = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e0 = prior.eps(x, 500)
        e1 = loaded.eps(x, 500)
    assert torch.equal(e0, e1)
    assert loaded.model_hash == h
    assert loaded.num_train_timesteps == 1000
    assert loaded.size_multiple == 2


def test_hash_stable_and_content_sensitive(saved_prior, tmp_path):
    _, path, h = saved_prior
    assert hash_model_dir(path) == h
    moved = tmp_path / "elsewhere"
    path.rename(moved)
    assert hash_model_dir(moved) == h
    cfg = moved / "scheduler_config.json"
    cfg.write_text(cfg.read_text().replace("1000", "999"))
    assert hash_model_dir(moved) != h


def test_pipeline_layout_loads(saved_prior, tmp_path):
    prior, path, _ = saved_prior
    root = tmp_path / "pipe"
    (root / "scheduler").mkdir(parents=True)
    path.rename(root / "unet")
    (root / "unet" / "scheduler_config.json").rename(root / "scheduler" / "scheduler_config.json")
    (root / "model_index.json").write_text("{}")
    loaded = DiffusionPrior.load(root)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, 10), loaded.eps(x, 10), rtol=1e-5, atol=1e-6)


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickle_only_directory_is_refused(saved_prior, tmp_path, monkeypatch):
    _, path, _ = saved_prior
    monkeypatch.chdir(tmp_path)
    (path / "diffusion_pytorch_model.safetensors").unlink()
    (path / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        DiffusionPrior.load(path)
    assert not (tmp_path / "PWNED").exists()


def test_missing_dir_and_bad_id(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model directory"):
        DiffusionPrior.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        DiffusionPrior.load(tmp_path / "empty")


def test_hub_id_offline_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="cannot fetch from the hub"):
        DiffusionPrior.load("someone/not-cached-model")


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_eps_x0_consistent(pred, tiny_unet):
    prior = DiffusionPrior.from_unet(tiny_unet(), prediction_type=pred)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    t = 300
    with torch.no_grad():
        eps, x0 = prior.eps_x0(x, t)
    ab = prior.abar(t)
    # x_t = sqrt(abar) x0 + sqrt(1-abar) eps must hold for every parametrisation
    torch.testing.assert_close(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x, rtol=1e-6, atol=1e-6)


def test_timestep_for_sigma(tiny_unet):
    prior = DiffusionPrior.from_unet(tiny_unet())
    for sigma in (0.04, 0.2, 0.4):
        t = prior.timestep_for_sigma(sigma)
        ab = float(prior.abar(t))
        assert abs(((1 - ab) / ab) ** 0.5 - sigma) < 0.02


def test_hashes_read_a_file_once_until_it_changes(saved_prior, tmp_path, monkeypatch):
    from pathlib import Path

    from restoreflow.models import prior as prior_module
    from restoreflow.models.denoiser import file_sha256

    _, path, h = saved_prior
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"a" * 100)
    real_open = Path.open

    def no_read(*a, **k):
        raise AssertionError("read again")

    first = file_sha256(f)  # just written: may change again within the same time tick
    monkeypatch.setattr(Path, "open", no_read)
    with pytest.raises(AssertionError, match="read again"):
        file_sha256(f)
    monkeypatch.setattr(Path, "open", real_open)
    monkeypatch.setattr(prior_module, "SETTLE_NS", -(10**18))  # every file settled
    assert file_sha256(f) == first and hash_model_dir(path) == h
    monkeypatch.setattr(Path, "open", no_read)
    assert file_sha256(f) == first and hash_model_dir(path) == h  # remembered
    monkeypatch.setattr(Path, "open", real_open)
    f.write_bytes(b"b" * 101)
    assert file_sha256(f) != first
    cfg = path / "scheduler_config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert hash_model_dir(path) != h
