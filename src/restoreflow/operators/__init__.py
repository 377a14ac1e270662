"""Degradation forward models ``y = noise(A x)``: linear operators with ``A``,
``A_adjoint`` and the regularised pseudo-inverse ``A_dagger``, plus noise models.

Pure torch; see :mod:`restoreflow.operators.registry` for the named operators used by
degradation specs.
"""

from .base import LinearOperator, ShapeError
from .blur import Blur, GaussianBlur, MotionBlur, UniformBlur
from .inpaint import Inpainting
from .kernels import (
    box_mask,
    gaussian_kernel,
    motion_kernel,
    random_box_mask,
    random_pixel_mask,
    uniform_kernel,
)
from .noise import GaussianNoise, NoiseModel, PoissonGaussianNoise, PoissonNoise
from .registry import NOISES, OPERATORS, Entry, Param, ParamError, build_noise, build_operator
from .simple import Colorise, Identity
from .superres import BicubicDownsample, BoxDownsample

__all__ = [
    "NOISES",
    "OPERATORS",
    "BicubicDownsample",
    "Blur",
    "BoxDownsample",
    "Colorise",
    "Entry",
    "GaussianBlur",
    "GaussianNoise",
    "Identity",
    "Inpainting",
    "LinearOperator",
    "MotionBlur",
    "NoiseModel",
    "Param",
    "ParamError",
    "PoissonGaussianNoise",
    "PoissonNoise",
    "ShapeError",
    "UniformBlur",
    "box_mask",
    "build_noise",
    "build_operator",
    "gaussian_kernel",
    "motion_kernel",
    "random_box_mask",
    "random_pixel_mask",
    "uniform_kernel",
]
