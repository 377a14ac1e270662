"""Embedders: the offline EfficientNet-Lite0 default and the CLIP loading path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from restoreflow.models.embedders import (
    ClipEmbedder,
    EfficientNetLiteEmbedder,
    Embedder,
    converted_efficientnet_weights,
    embed_images,
    get_embedder,
    sha256_files,
)
from restoreflow.models.prior import ModelLoadError
from restoreflow.samples import sample_path

NAMES = ("astronaut.png", "coffee.png", "brick.png", "moon.png", "chelsea.png")


def _load(name: str, size: int = 160) -> torch.Tensor:
    im = Image.open(sample_path(name))
    im = im.resize((size, size), Image.Resampling.BILINEAR)
    a = torch.from_numpy(np.asarray(im).copy()).float() / 255
    return a[None] if a.dim() == 2 else a.permute(2, 0, 1)


@pytest.fixture(scope="module")
def effnet(tmp_path_factory):
    weights = converted_efficientnet_weights(tmp_path_factory.mktemp("embedders"))
    return EfficientNetLiteEmbedder("cpu", weights=weights)


def test_conversion_is_cached_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTOREFLOW_CACHE_DIR", str(tmp_path))
    path = converted_efficientnet_weights()
    assert path.parent == tmp_path / "embedders" and path.suffix == ".safetensors"
    mtime = path.stat().st_mtime_ns
    assert converted_efficientnet_weights() == path
    assert path.stat().st_mtime_ns == mtime  # not converted again


def test_efficientnet_features(effnet):
    assert isinstance(effnet, Embedder)
    images = [_load(n) for n in NAMES]  # moon is grey (1 channel)
    e = embed_images(effnet, images)
    assert e.shape == (len(NAMES), 1280)
    assert torch.allclose(e.norm(dim=1), torch.ones(len(NAMES)), atol=1e-5)
    assert torch.equal(embed_images(effnet, images), e)  # deterministic
    assert effnet.weights_hash == sha256_files([converted_efficientnet_weights()])


def test_similar_images_are_nearer(effnet):
    g = torch.Generator().manual_seed(0)
    images = [_load(n) for n in NAMES]
    clean = embed_images(effnet, images)
    noisy = embed_images(
        effnet, [(im + 0.03 * torch.randn(im.shape, generator=g)).clamp(0, 1) for im in images]
    )
    sim = noisy @ clean.T  # (query, reference) cosine similarities
    for i in range(len(NAMES)):
        others = torch.cat([sim[i, :i], sim[i, i + 1 :]])
        assert sim[i, i] > others.max() + 0.1, NAMES[i]


def test_get_embedder_names():
    with pytest.raises(ValueError, match="unknown embedder"):
        get_embedder("resnet")
    with pytest.raises(ValueError, match="unknown embedder"):
        get_embedder("clip:")


def _tiny_clip(directory, with_processor: bool = True):
    from transformers import CLIPConfig, CLIPModel

    layer = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    cfg = CLIPConfig(
        text_config=dict(layer, vocab_size=99, max_position_embeddings=16),
        vision_config=dict(layer, image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(0)  # test-only: reproducible random init of the tiny model
    model = CLIPModel(cfg).eval()
    model.save_pretrained(directory, safe_serialization=True)
    if with_processor:
        (directory / "preprocessor_config.json").write_text(
            '{"image_mean": [0.48145466, 0.4578275, 0.40821073],'
            ' "image_std": [0.26862954, 0.26130258, 0.27577711],'
            ' "size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}'
        )
    return model


def test_tiny_clip_round_trip(tmp_path):
    model = _tiny_clip(tmp_path)
    emb = get_embedder(f"clip:{tmp_path}")
    assert isinstance(emb, ClipEmbedder) and emb.dim == 8
    assert emb.weights_hash == sha256_files(sorted(tmp_path.glob("*.safetensors")))
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    e = emb.embed(x)
    assert e.shape == (3, 8)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    # same numbers as the full CLIPModel on the same preprocessed pixels
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=emb.preprocess(x))
    ref = ref if torch.is_tensor(ref) else ref.pooler_output
    assert torch.allclose(e, torch.nn.functional.normalize(ref, dim=1), atol=1e-5)
    assert emb.preprocess(x).shape == (3, 3, 32, 32)
    assert emb.embed(torch.rand(1, 1, 32, 32)).shape == (1, 8)  # grey input


def test_clip_preprocessing_matches_processor(tmp_path):
    """Our torch resize/crop/normalise is close to transformers' own (PIL) processor."""
    from transformers import CLIPImageProcessorPil

    _tiny_clip(tmp_path)
    emb = ClipEmbedder(tmp_path)
    img = _load("astronaut.png", size=64)[:, :, 8:56]  # 64 x 48, exercises the crop
    proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=32)
    pil = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    ref = torch.as_tensor(np.asarray(proc(images=pil, return_tensors="np")["pixel_values"]))
    ours = emb.preprocess(img[None])
    assert ours.shape == ref.shape
    # normalised units (1 unit of [0, 1] is ~3.7): measured mean difference 0.005
    assert (ours - ref).abs().mean() < 0.03


def test_clip_pickle_only_refused(tmp_path):
    _tiny_clip(tmp_path, with_processor=False)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        ClipEmbedder(tmp_path)


def test_clip_missing_vision_weights_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _tiny_clip(tmp_path, with_processor=False)
    state = load_file(tmp_path / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if "visual_projection" not in k},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    with pytest.raises(ModelLoadError, match="missing"):
        ClipEmbedder(tmp_path)
