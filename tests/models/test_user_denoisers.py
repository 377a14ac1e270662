"""User denoiser weight files: FFDNet, DnCNN, DRUNet and SCUNet state dicts saved as
safetensors, plain .pth and nested .pth load through ``load_denoiser`` into the right
architecture with identical outputs; pickled code and misfitting shapes are refused."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from restoreflow.models.denoiser import load_denoiser
from restoreflow.models.dncnn import DnCNN, DnCNNDenoiser
from restoreflow.models.drunet import DRUNet, DRUNetDenoiser, drunet_config
from restoreflow.models.ffdnet import FFDNet, FFDNetDenoiser
from restoreflow.models.prior import ModelLoadError
from restoreflow.models.scunet import SCUNet, SCUNetDenoiser, scunet_config, shift_mask

SIGMA = 0.1  # below every sigma_max, so no clamping


def _seeded(build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build()
        for name, p in net.named_parameters():  # zero-initialised attention biases
            if name.endswith("relative_position_params"):
                p.data.normal_(0, 0.5)
        return net.eval()


def tiny(arch: str, channels: int = 3) -> torch.nn.Module:
    return _seeded({
        "ffdnet": lambda: FFDNet(channels, features=8, layers=3),
        "dncnn": lambda: DnCNN(channels, features=8, layers=3),
        "drunet": lambda: DRUNet(channels, nc=(4, 8, 12, 16), nb=2),
        "scunet": lambda: SCUNet(channels, config=(2, 1, 1, 2, 1, 1, 2), dim=16, head_dim=4,
                                 window_size=4),
    }[arch])


CLASSES = {"ffdnet": FFDNetDenoiser, "dncnn": DnCNNDenoiser, "drunet": DRUNetDenoiser,
           "scunet": SCUNetDenoiser}


def reference(arch: str, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if arch in ("ffdnet", "drunet"):
            return net(x, torch.full_like(x[:, :1], SIGMA))
        return net(x)


def save(state: dict, path, fmt: str):
    if fmt == "safetensors":
        save_file(state, str(path))
    elif fmt == "pth":
        torch.save(state, path)
    else:
        torch.save({"params": state}, path)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "nested"])
@pytest.mark.parametrize("arch", ["ffdnet", "dncnn", "drunet", "scunet"])
def test_state_dict_round_trip(tmp_path, arch, fmt):
    net = tiny(arch)
    path = tmp_path / f"{arch}.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    save(net.state_dict(), path, fmt)
    den = load_denoiser(path)
    assert type(den) is CLASSES[arch]
    assert den.channels == 3
    assert den.model_hash == sha256(path)
    x = torch.rand(2, 3, 21, 27, generator=torch.Generator().manual_seed(1))  # odd: padded
    out = den.denoise(x, SIGMA)
    assert out.shape == x.shape
    assert torch.allclose(out, reference(arch, net, x), atol=1e-6)


@pytest.mark.parametrize("arch", ["drunet", "scunet"])
def test_grey_models_load(tmp_path, arch):
    net = tiny(arch, channels=1)
    path = tmp_path / "grey.safetensors"
    save_file(net.state_dict(), str(path))
    den = load_denoiser(path)
    assert type(den) is CLASSES[arch] and den.channels == 1
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(den.denoise(x, SIGMA), reference(arch, net, x), atol=1e-6)


def test_drunet_layout_is_kairs_unetres():
    with torch.device("meta"):
        state = DRUNet().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["m_head.weight"] == (64, 4, 3, 3)
    assert shapes["m_down1.0.res.0.weight"] == (64, 64, 3, 3)
    assert shapes["m_down1.3.res.2.weight"] == (64, 64, 3, 3)
    assert shapes["m_down1.4.weight"] == (128, 64, 2, 2)  # strided conv
    assert shapes["m_down3.4.weight"] == (512, 256, 2, 2)
    assert shapes["m_body.3.res.2.weight"] == (512, 512, 3, 3)
    assert shapes["m_up3.0.weight"] == (512, 256, 2, 2)  # ConvTranspose2d (in, out, k, k)
    assert shapes["m_up3.1.res.0.weight"] == (256, 256, 3, 3)
    assert shapes["m_up1.4.res.2.weight"] == (64, 64, 3, 3)
    assert shapes["m_tail.weight"] == (3, 64, 3, 3)
    assert not any(k.endswith(".bias") for k in state)
    assert len(state) == 64 and sum(v.numel() for v in state.values()) == 32_640_960
    assert drunet_config(state) == (3, (64, 128, 256, 512), 4)


def test_scunet_layout_is_the_authors():
    with torch.device("meta"):
        state = SCUNet().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    blk = "m_down1.0."
    assert shapes["m_head.0.weight"] == (64, 3, 3, 3)
    assert shapes[blk + "trans_block.msa.relative_position_params"] == (1, 15, 15)
    assert shapes[blk + "trans_block.msa.embedding_layer.weight"] == (96, 32)
    assert shapes[blk + "trans_block.msa.linear.weight"] == (32, 32)
    assert shapes[blk + "trans_block.ln1.weight"] == (32,)
    assert shapes[blk + "trans_block.mlp.0.weight"] == (128, 32)
    assert shapes[blk + "trans_block.mlp.2.weight"] == (32, 128)
    assert shapes[blk + "conv1_1.weight"] == (64, 64, 1, 1)
    assert shapes[blk + "conv1_2.bias"] == (64,)
    assert shapes[blk + "conv_block.0.weight"] == (32, 32, 3, 3)
    assert shapes[blk + "conv_block.2.weight"] == (32, 32, 3, 3)
    assert shapes["m_down1.4.weight"] == (128, 64, 2, 2)
    assert shapes["m_body.3.trans_block.msa.relative_position_params"] == (8, 15, 15)
    assert shapes["m_up3.0.weight"] == (512, 256, 2, 2)
    assert shapes["m_up1.4.conv1_1.weight"] == (64, 64, 1, 1)
    assert shapes["m_tail.0.weight"] == (3, 64, 3, 3)
    assert "m_down1.0.conv_block.0.bias" not in state
    assert sum(v.numel() for v in state.values()) == 17_946_072
    assert scunet_config(state) == {"channels": 3, "config": (4,) * 7, "dim": 64,
                                    "head_dim": 32, "window_size": 8}


def test_shift_mask_matches_slice_definition():
    p, nh, nw = 8, 3, 2
    s = p - p // 2
    m = torch.zeros(nh, nw, p, p, p, p, dtype=torch.bool)  # (win r, win c, q r, q c, k r, k c)
    m[-1, :, :s, :, s:, :] = True
    m[-1, :, s:, :, :s, :] = True
    m[:, -1, :, :s, :, s:] = True
    m[:, -1, :, s:, :, :s] = True
    assert torch.equal(shift_mask(nh, nw, p), m.reshape(nh * nw, p * p, p * p))


class CodeCarrier:
    """An object whose unpickling would import code from this module."""


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": CodeCarrier()}, path)
    with pytest.raises(ModelLoadError) as err:
        load_denoiser(path)
    assert "refusing to unpickle" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("arch, key, shape", [
    ("drunet", "m_down1.1.res.0.weight", (5, 4, 3, 3)),
    ("drunet", "m_up2.0.weight", (12, 9, 2, 2)),
    ("scunet", "m_down1.0.trans_block.mlp.0.weight", (7, 8)),
    ("scunet", "m_body.1.conv1_1.weight", (128, 128, 3, 3)),
    ("scunet", "m_down2.0.trans_block.msa.relative_position_params", (2, 7)),
])
def test_wrong_shapes_one_line_error(tmp_path, arch, key, shape):
    state = tiny(arch).state_dict()
    assert key in state
    state[key] = torch.zeros(shape)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError) as err:
        load_denoiser(path)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit" in msg


@pytest.mark.parametrize("arch", ["drunet", "scunet"])
def test_missing_key_one_line_error(tmp_path, arch):
    state = tiny(arch).state_dict()
    state.pop("m_up1.1.conv1_2.weight" if arch == "scunet" else "m_up1.1.res.2.weight")
    with pytest.raises(ModelLoadError) as err:
        CLASSES[arch].from_state_dict(state)
    assert "\n" not in str(err.value) and "Missing key" in str(err.value)


def test_a_denoiser_file_is_a_prior_reference(tmp_path):
    """``prior: drunet.pth``: preflight accepts it; the prior is the denoiser over its range."""
    from restoreflow.models import priors
    from restoreflow.models.denoiser import file_sha256
    from restoreflow.models.dncnn import DnCNN
    from restoreflow.preflight import PreflightError, check_prior

    path = tmp_path / "dncnn.pth"
    torch.save(DnCNN(3, 8, 3).state_dict(), path)
    check_prior("spec.prior", str(path))
    prior = priors.load(str(path))
    assert prior.prediction_type == "sample" and prior.t_start < 999
    assert prior.model_hash == priors.prior_hash(str(path)) == file_sha256(path)
    torch.save({"model.0.weight": torch.zeros(2, 7, 3, 3)}, tmp_path / "odd.pth")
    with pytest.raises(PreflightError, match="unknown denoiser architecture"):
        check_prior("spec.prior", str(tmp_path / "odd.pth"))
