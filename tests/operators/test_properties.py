"""Property tests run for every registry operator x its example parameters (float64)."""

from __future__ import annotations

import pytest
import torch

SHAPE = (2, 3, 16, 24)  # divisible by 8 for SR; fits the example kernels and boxes
DENSE_SHAPE = (1, 1, 16, 16)  # tiny: the dense matrix is at most 256 x 256 (768 for RGB)
CLOSED_TOL = 1e-8  # relative, exact closed forms in float64
CG_TOL = 2e-2  # relative, CGLS at eta = 0 on ill-conditioned blurs (300 iterations)


def _rand(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _dense_shape(case):
    return (1, 3, 16, 16) if case[0] == "colorise" else DENSE_SHAPE


def test_adjointness(case, build_case):
    """|<A x, y> - <x, A^T y>| <= 1e-5 |<A x, y>|."""
    op = build_case(case, SHAPE)
    x = _rand(SHAPE, 1)
    y = _rand(op.y_shape(SHAPE), 2)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    assert abs(float(lhs - rhs)) <= 1e-5 * abs(float(lhs))


def test_pseudo_inverse_identity(case, build_case):
    """A A^+ A x = A x at eta = 0 (1e-8 relative for closed forms, 2e-2 for CGLS)."""
    op = build_case(case, SHAPE)
    x = _rand(SHAPE, 3)
    ax = op.A(x)
    ax_again = op.A(op.A_dagger(ax))
    tol = CLOSED_TOL if op.closed_form_dagger else CG_TOL
    assert _rel(ax_again, ax) <= tol


def test_pseudo_inverse_in_range_of_adjoint(case, build_case):
    """A^+ y is the minimum-norm solution: it lies in range(A^T), so A^+ A (A^+ y) = A^+ y."""
    op = build_case(case, SHAPE)
    if not op.closed_form_dagger:
        pytest.skip("CGLS iterates lie in range(A^T) by construction")
    xd = op.A_dagger(_rand(op.y_shape(SHAPE), 4))
    assert _rel(op.A_dagger(op.A(xd)), xd) <= 1e-6


def test_pinv_matches_dense(case, build_case, dense):
    """At eta = 0, closed-form A^+ equals torch.linalg.pinv of the explicit matrix."""
    shape = _dense_shape(case)
    op = build_case(case, shape)
    if not op.closed_form_dagger:
        pytest.skip("no closed form (CGLS): checked with eta > 0 in test_regularised_dagger")
    if hasattr(op, "rcond"):
        op.rcond = 1e-6  # same cut-off as the dense pinv
    a = dense(op, shape)
    y = _rand(op.y_shape(shape), 5).reshape(-1)
    expected = torch.linalg.pinv(a, rtol=1e-6) @ y
    got = op.A_dagger(y.view(op.y_shape(shape))).reshape(-1)
    assert _rel(got, expected) <= 1e-6


@pytest.mark.parametrize("eta", [0.05, 1.0])
def test_regularised_dagger(case, build_case, dense, eta):
    """A^+_eta y = A^T (A A^T + eta I)^{-1} y against a dense solve."""
    shape = _dense_shape(case)
    op = build_case(case, shape)
    op.cg_tol = 1e-12
    a = dense(op, shape)
    y = _rand(op.y_shape(shape), 6).reshape(-1)
    m = a.shape[0]
    expected = a.T @ torch.linalg.solve(a @ a.T + eta * torch.eye(m, dtype=a.dtype), y)
    got = op.A_dagger(y.view(op.y_shape(shape)), eta=eta).reshape(-1)
    assert _rel(got, expected) <= 1e-7


def test_adjoint_matches_dense_transpose(case, build_case, dense):
    shape = _dense_shape(case)
    op = build_case(case, shape)
    a = dense(op, shape)
    y = _rand(op.y_shape(shape), 7)
    assert torch.allclose(op.A_adjoint(y).reshape(-1), a.T @ y.reshape(-1), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(case, build_case, dtype):
    op = build_case(case, SHAPE, dtype=dtype)
    x = _rand(SHAPE, 8, dtype)
    y = op.A(x)
    assert tuple(y.shape) == op.y_shape(SHAPE)
    assert y.dtype == dtype
    xt = op.A_adjoint(y)
    assert tuple(xt.shape) == SHAPE and xt.dtype == dtype
    xd = op.A_dagger(y, eta=0.1)
    assert tuple(xd.shape) == SHAPE and xd.dtype == dtype
    for t in op.buffers():
        assert t.dtype in (dtype, torch.bool)


def test_device_and_dtype_move(case, build_case):
    op32 = build_case(case, SHAPE, dtype=torch.float32)
    op64 = op32.to("cpu", torch.float64)
    for t in op64.buffers():
        assert t.device.type == "cpu" and t.dtype in (torch.float64, torch.bool)
    x = _rand(SHAPE, 9)
    assert op64.A(x).dtype == torch.float64


def test_batch_independence(case, build_case):
    """A, A^T and A^+ of a batch equal the same maps applied item by item."""
    op = build_case(case, SHAPE)
    x = _rand(SHAPE, 10)
    y = _rand(op.y_shape(SHAPE), 11)
    for f, z in ((op.A, x), (op.A_adjoint, y), (lambda v: op.A_dagger(v, eta=0.1), y)):
        whole = f(z)
        items = torch.cat([f(z[i : i + 1]) for i in range(z.shape[0])])
        assert torch.allclose(whole, items, rtol=1e-9, atol=1e-12)


def test_halo_bounds_support(case, build_case):
    """A pixel of A x depends only on input pixels within ``halo`` of it."""
    op = build_case(case, SHAPE)
    assert op.halo is not None
    _, c, h, w = SHAPE
    i0, j0 = 8, 12
    x = torch.zeros(SHAPE, dtype=torch.float64)
    x[:, :, i0, j0] = 1.0
    y = op.A(x)
    f_h, f_w = h // y.shape[-2], w // y.shape[-1]  # SR factor (1 otherwise)
    # output pixel (i, j) covers input rows [i f, (i+1) f): its distance to the impulse
    ii = torch.arange(y.shape[-2])[:, None]
    jj = torch.arange(y.shape[-1])[None, :]
    dist_i = torch.clamp(torch.maximum(ii * f_h - i0, i0 - ((ii + 1) * f_h - 1)), min=0)
    dist_j = torch.clamp(torch.maximum(jj * f_w - j0, j0 - ((jj + 1) * f_w - 1)), min=0)
    far = (dist_i > op.halo) | (dist_j > op.halo)
    if getattr(op, "boundary", None) == "circular":
        # no wrap-around: the impulse is more than halo away from every border
        assert op.halo <= min(i0, j0, h - 1 - i0, w - 1 - j0)
    if far.any():  # exact zeros up to FFT round-off
        assert float(y[..., far].abs().max()) <= 1e-12 * float(y.abs().max())


def test_channelwise_operators_act_per_channel(case, build_case):
    """``channelwise``: A, A^T and A^+ of one channel equal that channel of the whole."""
    op = build_case(case, SHAPE)
    if not op.channelwise:
        pytest.skip("not channel-wise")
    x = _rand(SHAPE, 11)
    y = _rand(op.y_shape(SHAPE), 12)
    for c in range(SHAPE[1]):
        assert _rel(op.A(x[:, c : c + 1]), op.A(x)[:, c : c + 1]) <= CLOSED_TOL
        assert _rel(op.A_adjoint(y[:, c : c + 1]), op.A_adjoint(y)[:, c : c + 1]) <= CLOSED_TOL
        got = op.A_dagger(y[:, c : c + 1], eta=0.1)
        tol = 1e-6 if op.closed_form_dagger else 1e-3  # CGLS stops on the joint residual
        assert _rel(got, op.A_dagger(y, eta=0.1)[:, c : c + 1]) <= tol


def test_results_are_new_tensors(case, build_case):
    """Samplers update operator results in place: they must never alias the input."""
    op = build_case(case, SHAPE)
    x = _rand(SHAPE, 13)
    y = _rand(op.y_shape(SHAPE), 14)
    for out, inp in [(op.A(x), x), (op.A_adjoint(y), y), (op.A_dagger(y, eta=0.0), y),
                     (op.dagger_adjoint(y, 0.1, 0.5, 0.5), y)]:
        assert out.untyped_storage().data_ptr() != inp.untyped_storage().data_ptr()


def test_dagger_adjoint_is_the_weighted_sum(case, build_case):
    """``a A^+_eta y + b A^T y`` (one pass for circular blurs, two otherwise)."""
    op = build_case(case, SHAPE)
    y = _rand(op.y_shape(SHAPE), 15)
    tol = CLOSED_TOL if op.closed_form_dagger else 1e-6
    for eta, a, b in [(0.3, 0.7, 0.2), (0.3, 1.0, 0.0), (0.3, 0.0, 2.0)]:
        want = a * op.A_dagger(y, eta=eta) + b * op.A_adjoint(y)
        assert _rel(op.dagger_adjoint(y, eta, a, b), want) <= tol
        assert _rel(op.dagger_adjoint(y.clone(), eta, a, b, overwrite=True), want) <= tol


def test_entry_x_shape_inverts_the_operator_shape(case, build_case):
    """The registry entry knows which x a measurement y belongs to (no name checks)."""
    from restoreflow.operators.registry import OPERATORS

    name, params = case
    x_shape = (1, 3, 32, 32)
    op = build_case(case, x_shape)
    y_shape = op.y_shape(x_shape)[1:]
    assert OPERATORS[name].x_shape(params, y_shape) == x_shape[1:]


def test_operators_declare_their_task(case, build_case):
    name, _ = case
    op = build_case(case, (1, 3, 32, 32))
    expected = {"gaussian_blur": "deblur", "uniform_blur": "deblur", "motion_blur": "deblur",
                "kernel_blur": "deblur", "sr": "sr", "denoise": "denoise", "colorise": "other"}
    assert op.task == expected.get(name, "inpaint" if name.startswith("inpaint") else "?")


def test_the_registry_knows_each_operators_task():
    """OPERATOR_TASKS (read before anything is built) agrees with the built operators."""
    from restoreflow.operators.registry import OPERATOR_TASKS, OPERATORS, build_operator

    assert set(OPERATOR_TASKS) == set(OPERATORS)
    for name, entry in OPERATORS.items():
        for params in entry.example_params:
            if any(isinstance(v, str) and "." in v for v in params.values()):
                continue  # reads a file (kernel_blur / inpaint_mask): same classes as above
            op = build_operator(name, params, (3, 64, 64), torch.Generator().manual_seed(0))
            assert getattr(op, "task", "other") == OPERATOR_TASKS[name], name
