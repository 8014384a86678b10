"""Surrogate gradients: exact Heaviside forward, analytic backward, checked against independent formulas,
finite differences of the smooth functions they stand for, and snnTorch."""

from __future__ import annotations

import math

import pytest
import torch

from spikefed.snn.surrogate import SURROGATES, Surrogate, get_surrogate, heaviside, spike

NAMES = ("atan", "fast_sigmoid", "sigmoid", "triangular", "straight_through")
SLOPES = (0.5, 1.0, 2.0, 5.0, 25.0)


# -- independent formulas (written from the papers / the module table, not from the code) ------------------
def d_formula(name: str, x: float, a: float) -> float:
    """dS/dx of each builtin surrogate, plain Python floats."""
    if name == "atan":
        return (a / 2.0) / (1.0 + (math.pi / 2.0 * a * x) ** 2)
    if name == "fast_sigmoid":
        return 1.0 / (1.0 + a * abs(x)) ** 2
    if name == "sigmoid":
        s = 1.0 / (1.0 + math.exp(-a * x))
        return a * s * (1.0 - s)
    if name == "triangular":
        return a * max(0.0, 1.0 - a * abs(x))
    if name == "straight_through":
        return a
    raise AssertionError(name)


def smooth(name: str, x: float, a: float) -> float:
    """The smooth function whose derivative each surrogate is."""
    if name == "atan":
        return math.atan(math.pi / 2.0 * a * x) / math.pi + 0.5
    if name == "fast_sigmoid":
        return x / (1.0 + a * abs(x))
    if name == "sigmoid":
        return 1.0 / (1.0 + math.exp(-a * x))
    if name == "triangular":
        # integral from -inf of a * max(0, 1 - a|t|): piecewise quadratic, 0 below -1/a, 1 above 1/a
        if x <= -1.0 / a:
            return 0.0
        if x <= 0.0:
            return 0.5 + a * x + a * a * x * x / 2.0
        if x <= 1.0 / a:
            return 0.5 + a * x - a * a * x * x / 2.0
        return 1.0
    if name == "straight_through":
        return a * x
    raise AssertionError(name)


def sample_points(a: float) -> list[float]:
    """Points that avoid the kinks (0 for |x|, +-1/a for the triangle) by a wide margin."""
    pts = [-3.0, -1.3, -0.61, -0.2, -0.07, -0.013, 0.011, 0.05, 0.17, 0.33, 0.9, 2.4]
    return [p for p in pts if all(abs(p - k) > 1e-3 for k in (0.0, 1.0 / a, -1.0 / a))]


# -- forward -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_exact_heaviside(name: str, dtype: torch.dtype) -> None:
    vals = [-math.inf, -2.0, -1e-30, -0.0, 0.0, 1e-30, 1e-7, 0.5, 3.0, math.inf]
    want = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    x = torch.tensor(vals, dtype=dtype)
    for out in (spike(x, name), get_surrogate(name)(x), heaviside(x)):
        assert out.dtype == dtype
        assert out.tolist() == want


def test_forward_zero_gives_zero_with_grad() -> None:
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    out = spike(x)
    assert out.tolist() == [0.0, 0.0, 0.0]
    out.sum().backward()
    # atan default slope 2: derivative at 0 is a/2 = 1
    assert torch.allclose(x.grad, torch.ones(3, dtype=torch.float64))


# -- backward against analytic formulas ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("slope", SLOPES)
def test_backward_matches_analytic_formula(name: str, slope: float) -> None:
    pts = sample_points(slope) + [0.0]
    x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    g = torch.linspace(-1.5, 2.0, len(pts), dtype=torch.float64)
    spike(x, get_surrogate(name, slope)).backward(g)
    want = torch.tensor([gi * d_formula(name, p, slope) for gi, p in zip(g.tolist(), pts)], dtype=torch.float64)
    torch.testing.assert_close(x.grad, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("slope", SLOPES)
def test_derivative_is_finite_difference_of_smooth_function(name: str, slope: float) -> None:
    pts = sample_points(slope)
    h = 1e-6
    fd = [(smooth(name, p + h, slope) - smooth(name, p - h, slope)) / (2 * h) for p in pts]
    got = get_surrogate(name, slope).derivative(torch.tensor(pts, dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor(fd, dtype=torch.float64), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["atan", "triangular"])
def test_unit_area_surrogates_integrate_to_one(name: str) -> None:
    # atan and triangular are derivatives of functions going from 0 to 1: trapezoid integral ~ 1
    for slope in (1.0, 4.0):
        L = 50.0
        x = torch.linspace(-L, L, 200_001, dtype=torch.float64)
        area = torch.trapezoid(get_surrogate(name, slope).derivative(x), x).item()
        # atan has heavy tails: its mass inside [-L, L] is 2/pi * atan(pi/2 * a * L)
        want = 2.0 / math.pi * math.atan(math.pi / 2.0 * slope * L) if name == "atan" else 1.0
        assert area == pytest.approx(want, abs=1e-6)


def test_default_slopes() -> None:
    assert {n: get_surrogate(n).slope for n in NAMES} == {
        "atan": 2.0, "fast_sigmoid": 25.0, "sigmoid": 25.0, "triangular": 1.0, "straight_through": 1.0,
    }
    assert set(SURROGATES) == set(NAMES)


# -- derivative / derivative_ ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_derivative_does_not_modify_input_and_inplace_variant_agrees(name: str) -> None:
    sur = get_surrogate(name, 3.0)
    x = torch.tensor([-0.7, -0.1, 0.0, 0.05, 0.4], dtype=torch.float64)
    keep = x.clone()
    d = sur.derivative(x)
    assert torch.equal(x, keep)
    want = torch.tensor([d_formula(name, v, 3.0) for v in keep.tolist()], dtype=torch.float64)
    torch.testing.assert_close(d, want, rtol=1e-12, atol=1e-15)
    z = keep.clone()
    d_ = sur.derivative_(z)
    torch.testing.assert_close(d_, want, rtol=1e-12, atol=1e-15)


# -- user callables -----------------------------------------------------------------------------------------
def test_user_callable_is_used_as_derivative() -> None:
    def gauss(x: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.exp(-(x**2))

    sur = get_surrogate(gauss)
    assert sur.slope is None and sur.name == "gauss"
    pts = [-1.0, -0.25, 0.0, 0.5, 2.0]
    x = torch.tensor(pts, dtype=torch.float64, requires_grad=True)
    out = spike(x, gauss)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    out.backward(torch.full_like(out, 2.0))
    want = torch.tensor([6.0 * math.exp(-p * p) for p in pts], dtype=torch.float64)
    torch.testing.assert_close(x.grad, want, rtol=1e-12, atol=0.0)
    # a Surrogate object passes through get_surrogate unchanged
    assert get_surrogate(sur) is sur


def test_surrogate_object_with_new_slope() -> None:
    base = get_surrogate("atan")
    s5 = get_surrogate(base, 5.0)
    assert s5.slope == 5.0 and s5.name == "atan"
    x = torch.tensor([0.1], dtype=torch.float64)
    assert s5.derivative(x).item() == pytest.approx(d_formula("atan", 0.1, 5.0), rel=1e-12)


# -- snnTorch -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ours, theirs_factory, slope",
    [
        ("atan", "atan", 2.0),
        ("atan", "atan", 0.7),
        ("fast_sigmoid", "fast_sigmoid", 25.0),
        ("fast_sigmoid", "fast_sigmoid", 3.0),
        ("sigmoid", "sigmoid", 25.0),
        ("sigmoid", "sigmoid", 4.0),
        ("straight_through", "straight_through_estimator", 1.0),
    ],
)
def test_matches_snntorch_backward(ours: str, theirs_factory: str, slope: float) -> None:
    sg = pytest.importorskip("snntorch.surrogate")
    if theirs_factory == "atan":
        theirs = sg.atan(alpha=slope)
    elif theirs_factory == "straight_through_estimator":
        theirs = sg.straight_through_estimator()
    else:
        theirs = getattr(sg, theirs_factory)(slope=slope)
    gen = torch.Generator().manual_seed(0)
    # float64 (snnTorch's forward returns float32, its backward keeps the input dtype); |x| <= 1 keeps
    # snnTorch's exp(-k x)^2 finite
    base = torch.rand(200, generator=gen, dtype=torch.float64) * 2 - 1
    base[:3] = torch.tensor([0.0, 1e-3, -1e-3])
    # upstream gradient representable in float32: it reaches snnTorch's backward as float32
    g = torch.randn(200, generator=gen).to(torch.float64)
    x1 = base.clone().requires_grad_(True)
    x2 = base.clone().requires_grad_(True)
    o1 = spike(x1, get_surrogate(ours, slope))
    o2 = theirs(x2)
    assert torch.equal(o1, o2.to(o1.dtype))
    o1.backward(g)
    o2.backward(g.to(o2.dtype))
    assert x2.grad.dtype == torch.float64
    # snnTorch multiplies the float32 upstream gradient by the slope in float32 first: rtol 1e-6
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-6, atol=1e-14)


# -- errors ---------------------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        get_surrogate("tanh")
    msg = str(info.value)
    assert "tanh" in msg
    for n in NAMES:
        assert n in msg
    with pytest.raises(ValueError):
        spike(torch.zeros(2), "relu")


@pytest.mark.parametrize("slope", [0.0, -1.0, -1e-9, math.nan, math.inf])
def test_bad_slope_raises(slope: float) -> None:
    with pytest.raises(ValueError, match="slope"):
        get_surrogate("atan", slope)


def test_callable_with_slope_raises() -> None:
    with pytest.raises(ValueError, match="slope"):
        get_surrogate(lambda x: torch.ones_like(x), 2.0)


def test_non_callable_spec_raises_type_error_listing_names() -> None:
    with pytest.raises(TypeError) as info:
        get_surrogate(3.0)  # type: ignore[arg-type]
    assert all(n in str(info.value) for n in NAMES)


def test_bad_slope_on_surrogate_object_raises() -> None:
    with pytest.raises(ValueError, match="slope"):
        get_surrogate(get_surrogate("atan"), -1.0)


def test_slope_on_callable_surrogate_object_raises() -> None:
    sur = get_surrogate(lambda x: torch.ones_like(x))
    with pytest.raises(ValueError, match="slope"):
        get_surrogate(sur, 2.0)


@pytest.mark.parametrize("name", ["atan", "fast_sigmoid", "triangular"])
def test_float32_derivative_is_even(name: str) -> None:
    x = torch.linspace(0.01, 1.2, 120, dtype=torch.float32)
    sur = get_surrogate(name, 25.0 if name == "fast_sigmoid" else 2.0)
    torch.testing.assert_close(sur.derivative(x), sur.derivative(-x), rtol=1e-6, atol=0.0)


def test_float32_sigmoid_derivative_is_even_and_accurate() -> None:
    x = torch.linspace(0.01, 1.0, 100, dtype=torch.float32)
    sur = get_surrogate("sigmoid", 25.0)
    want = torch.tensor([d_formula("sigmoid", v, 25.0) for v in x.tolist()], dtype=torch.float32)
    torch.testing.assert_close(sur.derivative(-x), want, rtol=1e-4, atol=0.0)  # negative side is fine
    torch.testing.assert_close(sur.derivative(x), want, rtol=1e-4, atol=0.0)


def test_surrogate_is_frozen() -> None:
    sur = get_surrogate("atan")
    assert isinstance(sur, Surrogate)
    with pytest.raises(Exception):
        sur.slope = 3.0  # type: ignore[misc]
