from __future__ import annotations

import math

import pytest
import torch

from spikefed.manifold import circular, manifold_of, project_parameters_
from spikefed.snn.delay import Delay, DelayState, delay_shift, delay_step


def reference_delay(
    x: torch.Tensor, delays: list[float], max_delay: int, history: torch.Tensor | None = None
) -> torch.Tensor:
    """Plain Python loop over t, b, i: interpolate x[t - k] and x[t - (k+1 mod D)], k = floor(d mod D)."""
    steps, batch, features = x.shape

    def value(s: int, b: int, i: int) -> float:
        if s >= 0:
            return float(x[s, b, i])
        if history is not None and s >= -max_delay:
            return float(history[max_delay + s, b, i])
        return 0.0

    out = torch.zeros(steps, batch, features, dtype=torch.float64)
    for i in range(features):
        d = delays[i] % max_delay
        k0 = int(math.floor(d)) % max_delay
        frac = d - math.floor(d)
        k1 = (k0 + 1) % max_delay
        for t in range(steps):
            for b in range(batch):
                out[t, b, i] = (1.0 - frac) * value(t - k0, b, i) + frac * value(t - k1, b, i)
    return out


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------- exact shifts


def test_integer_delay_hand_values() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1)
    y, _ = Delay(1, max_delay=3, init=torch.tensor([2.0]))(x)
    assert y.flatten().tolist() == [0.0, 0.0, 1.0, 2.0]


def test_integer_delays_shift_exactly_like_loop() -> None:
    delays = [0.0, 1.0, 2.0, 4.0, 3.0]
    x = randn(9, 2, 5)
    y, _ = Delay(5, max_delay=5, init=torch.tensor(delays))(x)
    expected = torch.zeros_like(x)
    for t in range(9):
        for b in range(2):
            for i, d in enumerate(delays):
                if t - int(d) >= 0:
                    expected[t, b, i] = x[t - int(d), b, i]
    assert torch.equal(y, expected)


def test_integer_dtype_delays_match_float_delays() -> None:
    x = randn(8, 2, 3)
    y_int, h_int = delay_shift(x, torch.tensor([0, 2, 3]), 4)
    y_float, h_float = delay_shift(x, torch.tensor([0.0, 2.0, 3.0]), 4)
    assert torch.equal(y_int, y_float) and torch.equal(h_int, h_float)
    assert torch.equal(y_int[2:, :, 1], x[:-2, :, 1])


def test_delay_wraps_modulo_max_delay() -> None:
    big_d = 4
    x = randn(10, 3, 1)
    shift_one = torch.cat([torch.zeros(1, 3, 1), x[:-1]])
    for d in (1.0, big_d + 1.0, 2 * big_d + 1.0, 1.0 - big_d):
        y, _ = delay_shift(x, torch.tensor([d]), big_d)
        assert torch.equal(y, shift_one), d
    for d in (0.0, float(big_d), 3.0 * big_d):
        y, _ = delay_shift(x, torch.tensor([d]), big_d)
        assert torch.equal(y, x), d
    # A parameter pushed off the ring by an optimizer step acts like its wrapped value.
    module = Delay(1, max_delay=big_d)
    with torch.no_grad():
        module.delays.fill_(big_d + 1.0)
    assert torch.equal(module(x)[0], shift_one)


def test_max_delay_one_is_identity() -> None:
    x = randn(5, 2, 3)
    y, state = Delay(3, max_delay=1, init=torch.tensor([0.0, 0.5, 0.9]))(x)
    assert torch.equal(y, x)
    assert state.buffer.shape == (1, 2, 3) and state.position == 0


# ------------------------------------------------------------------------------------------- fractional


def test_fractional_delay_hand_values() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(5, 1, 1)
    y, _ = delay_shift(x, torch.tensor([1.25]), 4)
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 0.75, 1.75, 2.75, 3.75]))
    # Across the seam: d = 3.5 with D = 4 mixes taps 3 and 0 (4 mod 4).
    y, _ = delay_shift(x, torch.tensor([3.5]), 4)
    assert torch.allclose(y.flatten(), torch.tensor([0.5, 1.0, 1.5, 2.5, 3.5]))


def test_fractional_delays_match_loop_with_history() -> None:
    delays = [0.25, 1.5, 2.75, 3.0, 4.5, 7.2]
    x = randn(8, 2, 6, dtype=torch.float64)
    history = randn(5, 2, 6, seed=1, dtype=torch.float64)
    y, new_history = delay_shift(x, torch.tensor(delays, dtype=torch.float64), 5, history)
    assert torch.allclose(y, reference_delay(x, delays, 5, history), atol=1e-12)
    assert torch.equal(new_history, x[-5:])
    # Shorter than the ring: the new history keeps the tail of the old one.
    _, short = delay_shift(x[:2], torch.tensor(delays, dtype=torch.float64), 5, history)
    assert torch.equal(short, torch.cat([history[2:], x[:2]]))


# ------------------------------------------------------------------------------------------- state


def _module(seed: int = 3) -> Delay:
    return Delay(4, max_delay=5, init="uniform", generator=seed)


def test_step_matches_forward_from_zero_and_carried_state() -> None:
    module = _module()
    x = randn(11, 3, 4)
    for start in (None, DelayState(randn(5, 3, 4, seed=7), 2)):
        y_seq, state_seq = module(x, start)
        state = start
        outs = []
        for t in range(x.shape[0]):
            y_t, state = module.step(x[t], state)
            outs.append(y_t)
        assert torch.allclose(torch.stack(outs), y_seq, atol=1e-6)
        assert torch.equal(state.buffer, state_seq.buffer)
        assert state.position == state_seq.position == ((start.position if start else 0) + 11) % 5


def test_step_matches_loop_reference() -> None:
    delays = [0.0, 1.5, 3.25, 4.75]
    module = Delay(4, max_delay=5, init=torch.tensor(delays))
    x = randn(9, 2, 4)
    state = None
    outs = []
    for t in range(9):
        y_t, state = module.step(x[t], state)
        outs.append(y_t)
    assert torch.allclose(torch.stack(outs).double(), reference_delay(x, delays, 5), atol=1e-6)


def test_chunked_forward_matches_whole() -> None:
    module = _module(seed=5)
    x = randn(12, 2, 4)
    y_whole, state_whole = module(x)
    state = None
    outs = []
    for lo, hi in ((0, 4), (4, 5), (5, 5), (5, 12)):
        y, state = module(x[lo:hi], state)
        outs.append(y)
    assert torch.allclose(torch.cat(outs), y_whole, atol=1e-6)
    assert torch.equal(state.buffer, state_whole.buffer) and state.position == state_whole.position


def test_state_position_accepts_tensor_and_inputs_are_not_mutated() -> None:
    module = _module()
    buffer = randn(5, 2, 4, seed=2)
    kept = buffer.clone()
    x = randn(3, 2, 4, seed=4)
    y_int, _ = module(x, DelayState(buffer, 3))
    y_tensor, _ = module(x, DelayState(buffer, torch.tensor(3)))
    module.step(x[0], DelayState(buffer, 3))
    assert torch.equal(y_int, y_tensor)
    assert torch.equal(buffer, kept)


# ------------------------------------------------------------------------------------------- gradient


def test_gradient_wrt_fractional_delay_matches_finite_difference() -> None:
    delays = torch.tensor([1.3, 2.6, 4.4], dtype=torch.float64)  # 4.4 mixes taps 4 and 0 (D = 5)
    x = randn(10, 2, 3, seed=8, dtype=torch.float64)
    weights = randn(10, 2, 3, seed=9, dtype=torch.float64)

    def loss(d: torch.Tensor) -> torch.Tensor:
        return (weights * delay_shift(x, d, 5)[0]).sum()

    module = Delay(3, max_delay=5, init=delays).double()
    (weights * module(x)[0]).sum().backward()
    grad = module.delays.grad
    assert grad is not None
    eps = 1e-5
    for i in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[i] = eps
        fd = (loss(delays + step) - loss(delays - step)) / (2 * eps)
        assert abs(float(grad[i]) - float(fd)) < 1e-7, (i, float(grad[i]), float(fd))
        assert abs(float(fd)) > 1e-3  # the check is not vacuous
    # Same gradient through the stepping path.
    module.delays.grad = None
    state = None
    total = torch.zeros((), dtype=torch.float64)
    for t in range(10):
        y_t, state = module.step(x[t], state)
        total = total + (weights[t] * y_t).sum()
    total.backward()
    assert torch.allclose(module.delays.grad, grad, atol=1e-10)


def test_fixed_delays_get_no_gradient() -> None:
    module = Delay(3, max_delay=4, init="uniform", learnable=False, generator=0)
    assert not module.delays.requires_grad
    assert torch.equal(module.delays, module.delays.round())
    x = randn(6, 2, 3).requires_grad_()
    module(x)[0].sum().backward()
    assert module.delays.grad is None and x.grad is not None


# ------------------------------------------------------------------------------------------- manifold, init


def test_parameter_is_circular_with_period_max_delay() -> None:
    module = Delay(6, max_delay=7, init="uniform", generator=torch.Generator().manual_seed(1))
    m = manifold_of(module.delays)
    assert m == circular(7) and m.kind == "circular" and m.period == 7.0
    assert dict(module.named_parameters()).keys() == {"delays"}
    assert bool(((module.delays >= 0) & (module.delays < 7)).all())
    assert not torch.equal(module.delays, module.delays.round())  # continuous init when learnable
    with torch.no_grad():
        module.delays.fill_(8.5)
    project_parameters_(module)
    assert torch.allclose(module.delays, torch.full((6,), 1.5))


def test_uniform_init_is_seeded() -> None:
    a = Delay(8, 5, init="uniform", generator=11).delays
    b = Delay(8, 5, init="uniform", generator=torch.Generator().manual_seed(11)).delays
    c = Delay(8, 5, init="uniform", generator=12).delays
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tensor_init_wraps_onto_ring() -> None:
    module = Delay(3, max_delay=4, init=torch.tensor([5.0, -1.0, 2.5]))
    assert module.delays.tolist() == [1.0, 3.0, 2.5]


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("max_delay", [0, -2, 2.5, True, "3"])
def test_bad_max_delay_raises(max_delay: object) -> None:
    with pytest.raises(ValueError, match="max_delay"):
        Delay(3, max_delay)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_delay"):
        delay_shift(torch.zeros(2, 1, 1), torch.zeros(1), max_delay)  # type: ignore[arg-type]


def test_bad_constructor_arguments_raise() -> None:
    with pytest.raises(ValueError, match="features"):
        Delay(0, 3)
    with pytest.raises(ValueError, match="valid choices: 'zeros', 'uniform'"):
        Delay(3, 3, init="normal")
    with pytest.raises(ValueError, match=r"expected init of shape \[features\] = \[3\]"):
        Delay(3, 3, init=torch.zeros(4))
    with pytest.raises(ValueError, match="generator"):
        Delay(3, 3, init="uniform")


def test_bad_shapes_raise() -> None:
    module = Delay(4, 3)
    with pytest.raises(ValueError, match=r"expected x of shape \[T, B, features=4\]"):
        module(torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"expected x of shape \[T, B, features=4\], got \[5, 2, 3\]"):
        module(torch.zeros(5, 2, 3))
    with pytest.raises(ValueError, match=r"expected x_t of shape \[B, features=4\]"):
        module.step(torch.zeros(5, 2, 4))
    with pytest.raises(ValueError, match=r"expected state.buffer of shape \[max_delay, B, features\] = \[3, 2, 4\]"):
        module(torch.zeros(5, 2, 4), DelayState(torch.zeros(2, 2, 4), 0))
    with pytest.raises(ValueError, match=r"state.position must be an int in \[0, 3\)"):
        module.step(torch.zeros(2, 4), DelayState(torch.zeros(3, 2, 4), 3))
    with pytest.raises(ValueError, match="floating-point"):
        module(torch.zeros(5, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected delays of shape \[features\] = \[4\]"):
        delay_shift(torch.zeros(5, 2, 4), torch.zeros(3), 3)
    with pytest.raises(ValueError, match=r"expected history of shape \[max_delay, B, features\]"):
        delay_shift(torch.zeros(5, 2, 4), torch.zeros(4), 3, torch.zeros(3, 1, 4))
    with pytest.raises(ValueError, match=r"expected x_t of shape \[B, features\]"):
        delay_step(torch.zeros(4), torch.zeros(4), 3)
