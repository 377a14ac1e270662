"""Operators against independent implementations (scipy.ndimage, reshape-mean, PIL)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from restoreflow.operators import (
    BicubicDownsample,
    Blur,
    BoxDownsample,
    Colorise,
    GaussianBlur,
    Inpainting,
    MotionBlur,
)

MODES = {"circular": "wrap", "reflect": "mirror"}  # torch "reflect" pad == scipy "mirror"


def _img(shape=(2, 3, 16, 20), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _scipy_blur(x: torch.Tensor, k: torch.Tensor, mode: str) -> np.ndarray:
    xn, kn = x.numpy(), k.numpy()
    out = np.empty_like(xn)
    for b in range(xn.shape[0]):
        for c in range(xn.shape[1]):
            out[b, c] = ndi.convolve(xn[b, c], kn, mode=mode)
    return out


@pytest.mark.parametrize("boundary", ["circular", "reflect"])
def test_gaussian_blur_matches_scipy(boundary):
    op = GaussianBlur(1.5, boundary=boundary, dtype=torch.float64)
    assert op.kernel.shape == (11, 11)  # 2 * ceil(4.5) + 1
    x = _img()
    ref = _scipy_blur(x, op.kernel, MODES[boundary])
    assert np.abs(op.A(x).numpy() - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("boundary", ["circular", "reflect"])
@pytest.mark.parametrize("kshape", [(5, 3), (4, 4), (4, 5)])
def test_asymmetric_and_even_kernels_match_scipy(boundary, kshape):
    """Orientation (flip) and centring (c = size // 2) agree with scipy.ndimage.convolve."""
    k = torch.rand(kshape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    op = Blur(k, boundary=boundary, dtype=torch.float64)
    x = _img()
    ref = _scipy_blur(x, op.kernel, MODES[boundary])
    assert np.abs(op.A(x).numpy() - ref).max() <= 1e-12


def test_motion_blur_matches_scipy():
    op = MotionBlur(7, torch.Generator().manual_seed(3), intensity=1.0, dtype=torch.float64)
    x = _img()
    ref = _scipy_blur(x, op.kernel, "wrap")
    assert np.abs(op.A(x).numpy() - ref).max() <= 1e-12


def test_reflect_adjoint_is_autograd_vjp():
    """The hand-written reflect adjoint equals the vector-Jacobian product of A."""
    k = torch.rand(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    op = Blur(k, boundary="reflect", dtype=torch.float64)
    x = _img((1, 2, 12, 9)).requires_grad_(True)
    y = _img((1, 2, 12, 9), seed=5)
    (grad,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    assert torch.allclose(op.A_adjoint(y), grad, atol=1e-13)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_box_downsample_is_reshape_mean(factor):
    x = _img((2, 3, 16, 24))
    b, c, h, w = x.shape
    ref = x.reshape(b, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))
    assert torch.allclose(BoxDownsample(factor).A(x), ref, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_matches_pil_in_the_interior(factor):
    """PIL's BICUBIC resize (Keys a=-0.5, support scaled by the factor) agrees away from
    the border (PIL truncates the kernel at the border; we reflect like MATLAB)."""
    from PIL import Image

    x = _img((1, 1, 64, 64))
    im = Image.fromarray(x[0, 0].numpy().astype(np.float32), mode="F")
    ref = np.asarray(im.resize((64 // factor, 64 // factor), Image.BICUBIC), dtype=np.float64)
    got = BicubicDownsample(factor).A(x)[0, 0].numpy()
    m = 3  # output pixels within 2f input px of the border differ
    assert np.abs(got - ref)[m:-m, m:-m].max() <= 1e-5


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_preserves_constants_and_ramps(factor):
    op = BicubicDownsample(factor)
    const = torch.full((1, 1, 32, 32), 0.3, dtype=torch.float64)
    assert torch.allclose(op.A(const), torch.full_like(op.A(const), 0.3), atol=1e-12)
    ramp = torch.arange(64, dtype=torch.float64).repeat(64, 1)[None, None]  # x[i, j] = j
    y = op.A(ramp)[0, 0, 0]
    centres = (torch.arange(64 // factor, dtype=torch.float64) + 0.5) * factor - 0.5
    inner = slice(2, -2)  # Keys cubic reproduces linear functions away from the border
    assert torch.allclose(y[inner], centres[inner], atol=1e-9)


def test_colorise_and_inpainting_semantics():
    x = _img((1, 3, 4, 5))
    col = Colorise(3)
    assert torch.allclose(col.A(x), x.mean(1, keepdim=True))
    assert torch.allclose(col.A_dagger(col.A(x)), col.A(x).expand(1, 3, 4, 5))  # copies
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    inp = Inpainting(mask).double()
    y = inp.A(x)
    assert torch.equal(y[..., ~mask], torch.zeros_like(y[..., ~mask]))
    assert torch.equal(y[..., mask], x[..., mask])
    assert torch.allclose(inp.A_dagger(y, eta=1.0), y / 2)
