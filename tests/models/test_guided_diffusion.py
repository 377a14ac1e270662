"""The guided-diffusion UNet: real key layout, preset sizes, loading through the prior,
inference of the config from the weights, and refusal of unsafe or mismatched files."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from restoreflow.models import guided_diffusion as gd
from restoreflow.models.denoiser import file_sha256
from restoreflow.models.prior import ModelLoadError

#: A tiny config of the real architecture (two levels, attention at the second).
TINY = gd.GuidedUNetConfig(
    image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(2,),
    channel_mult=(1, 2), num_head_channels=16,
)
#: The other branch of every switch: conv resampling, additive embedding, 3 outputs.
TINY_PLAIN = gd.GuidedUNetConfig(
    image_size=16, model_channels=32, out_channels=3, num_res_blocks=2,
    attention_resolutions=(1,), channel_mult=(1, 1, 2), num_head_channels=-1, num_heads=2,
    use_scale_shift_norm=False, resblock_updown=False,
)
#: The published size: 256x256_diffusion_uncond.pt has 552,814,086 parameters.
IMAGENET_256_PARAMS = 552_814_086


def _tiny_net(cfg=TINY, seed=0) -> gd.GuidedUNet:
    torch.manual_seed(seed)
    return gd.GuidedUNet(cfg).eval()


def _meta(cfg: gd.GuidedUNetConfig) -> gd.GuidedUNet:
    with torch.device("meta"):
        return gd.GuidedUNet(cfg)


def _x(b=2, c=3, h=16, w=16, seed=1):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_matches_original_net(tmp_path, suffix):
    net = _tiny_net()
    path = tmp_path / f"tiny{suffix}"
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    prior = gd.load_guided_prior(path, num_head_channels=16)
    x = _x()
    with torch.no_grad():
        ref = net(x, torch.tensor([500, 500]))[:, :3]
        out = prior.model_output(x, 500)
        eps = prior.eps(x, 500)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(eps, ref, rtol=0, atol=0)
    assert prior.model_hash == file_sha256(path)
    assert prior.source == str(path)
    assert prior.prediction_type == "epsilon"
    assert prior.size_multiple == 2
    assert prior.unet.config == gd.config_from_state_dict(state, num_head_channels=16)


def test_schedule_is_the_linear_checkpoint_schedule(tmp_path):
    torch.save(_tiny_net().state_dict(), tmp_path / "m.pt")
    prior = gd.load_guided_prior(tmp_path / "m.pt", num_head_channels=16)
    ab = prior.alphas_cumprod
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    torch.testing.assert_close(ab, torch.cumprod(1 - betas, 0), rtol=1e-12, atol=0)
    assert prior.num_train_timesteps == 1000 and prior.t_start == 999


def test_timestep_is_the_raw_integer():
    net = _tiny_net()
    x = _x(b=1)
    with torch.no_grad():
        a, b = net(x, torch.tensor([10])), net(x, torch.tensor([11]))
    assert not torch.equal(a, b)
    emb = gd.timestep_embedding(torch.tensor([3]), 8)
    w = torch.exp(-math.log(10000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb, torch.cat([torch.cos(3 * w), torch.sin(3 * w)])[None])


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_head_split(new_order):
    """qkv channels per head (legacy): [q_h, k_h, v_h] for each head h in turn."""
    torch.manual_seed(0)
    block = gd.AttentionBlock(64, num_head_channels=16, new_order=new_order).eval()
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        qkv = block.qkv(block.norm(x.reshape(2, 64, 16)))
        if new_order:
            q, k, v = (u.reshape(8, 16, 16) for u in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(8, 48, 16).split(16, dim=1)
        w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / 4.0, dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(2, 64, 16)
        ref = x + block.proj_out(a).reshape(2, 64, 4, 4)
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_imagenet_preset_keys_and_size():
    net = _meta(gd.IMAGENET_256_UNCOND)
    state = net.state_dict()
    for key in ("time_embed.0.weight", "time_embed.2.weight", "input_blocks.0.0.weight",
                "input_blocks.1.0.in_layers.0.weight", "input_blocks.1.0.emb_layers.1.weight",
                "input_blocks.1.0.out_layers.3.weight", "input_blocks.3.0.in_layers.2.weight",
                "input_blocks.7.0.skip_connection.weight", "input_blocks.10.1.norm.weight",
                "input_blocks.10.1.qkv.weight", "input_blocks.10.1.proj_out.weight",
                "middle_block.0.in_layers.0.weight", "middle_block.1.qkv.weight",
                "middle_block.2.out_layers.3.weight", "output_blocks.0.0.skip_connection.weight",
                "output_blocks.2.2.in_layers.0.weight", "output_blocks.17.0.out_layers.3.weight",
                "out.0.weight", "out.2.weight"):
        assert key in state, key
    assert "input_blocks.3.0.op.weight" not in state  # resblock_updown: no conv resampler
    assert state["input_blocks.0.0.weight"].shape == (256, 3, 3, 3)
    assert state["input_blocks.1.0.emb_layers.1.weight"].shape == (512, 1024)  # scale-shift
    assert state["middle_block.1.qkv.weight"].shape == (3072, 1024, 1)
    assert state["out.2.weight"].shape == (6, 256, 3, 3)
    assert len(net.input_blocks) == len(net.output_blocks) == 18
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - IMAGENET_256_PARAMS) <= 0.005 * IMAGENET_256_PARAMS
    assert n == IMAGENET_256_PARAMS
    assert net.middle_block[1].num_heads == 16  # 1024 channels / 64
    assert gd.IMAGENET_256_UNCOND.size_multiple == 32


@pytest.mark.parametrize("preset", list(gd.PRESETS))
def test_presets_recognised_from_weights(preset):
    cfg = gd.PRESETS[preset]
    assert gd.config_from_state_dict(_meta(cfg).state_dict()) == cfg


@pytest.mark.parametrize("cfg", [TINY, TINY_PLAIN], ids=["updown", "plain"])
def test_config_inferred_from_weights(cfg):
    state = _meta(cfg).state_dict()
    assert gd.matches(state)
    got = gd.config_from_state_dict(state, image_size=16,
                                    num_head_channels=cfg.num_head_channels,
                                    num_heads=cfg.num_heads)
    assert got.structure() == cfg.structure()
    assert got == cfg
    if cfg is TINY:  # attention 64 wide: 64-channel heads, as every released checkpoint
        assert gd.config_from_state_dict(state).num_head_channels == 64
        return
    with pytest.raises(ModelLoadError, match="num_head_channels") as info:
        gd.config_from_state_dict(state)  # 32 wide: the heads must be given
    assert "\n" not in str(info.value)


def test_plain_variant_loads(tmp_path):
    net = _tiny_net(TINY_PLAIN)
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    prior = gd.load_guided_prior(tmp_path / "plain.pth", num_heads=2)
    x = _x(b=1)
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, 7), net(x, torch.tensor([7])),
                                   rtol=0, atol=0)
    assert prior.size_multiple == 4


def test_matches_other_layouts():
    assert not gd.matches({"model.0.weight": torch.zeros(1)})
    assert not gd.matches({"conv_in.weight": torch.zeros(1), "time_embed.0.weight": torch.zeros(1)})


class Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_objects_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"input_blocks.0.0.weight": Boom()}, protocol=2))
    with pytest.raises(ModelLoadError, match="refusing to unpickle") as info:
        gd.load_guided_prior(path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_wrong_shape_refused_in_one_line(tmp_path):
    state = _tiny_net().state_dict()
    state["input_blocks.1.0.in_layers.2.weight"] = torch.zeros(32, 32, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match="does not fit") as info:
        gd.load_guided_prior(tmp_path / "bad.pt", num_head_channels=16)
    msg = str(info.value)
    assert "\n" not in msg and "size mismatch" in msg and str(tmp_path / "bad.pt") in msg


def test_missing_and_extra_keys_refused(tmp_path):
    state = _tiny_net().state_dict()
    del state["middle_block.1.qkv.bias"]
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(ModelLoadError, match="does not fit") as info:
        gd.load_guided_prior(tmp_path / "missing.pt", num_head_channels=16)
    assert "\n" not in str(info.value)
    state = _tiny_net().state_dict()
    state["label_emb.weight"] = torch.zeros(1000, 128)
    torch.save(state, tmp_path / "cond.pt")
    with pytest.raises(ModelLoadError, match="class-conditional"):
        gd.load_guided_prior(tmp_path / "cond.pt", num_head_channels=16)


def test_a_checkpoint_file_is_a_prior_reference(tmp_path):
    """``--prior model.pt`` / ``prior: model.pt``: preflight accepts it, priors.load gives
    the guided-diffusion prior (not a denoiser), and its hash is the file's sha256."""
    from restoreflow.models import priors
    from restoreflow.models.denoiser import file_sha256
    from restoreflow.preflight import check_prior

    path = tmp_path / "model.pt"
    torch.save(_tiny_net(replace(TINY, num_head_channels=64)).state_dict(), path)
    check_prior("spec.prior", str(path))
    prior = priors.load(str(path))
    assert prior.prediction_type == "epsilon" and prior.t_start == 999
    assert prior.model_hash == priors.prior_hash(str(path)) == file_sha256(path)
