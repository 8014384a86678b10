from __future__ import annotations

import math

import pytest
import torch

from spikefed.snn import encoding as enc

spikegen = pytest.importorskip("snntorch.spikegen")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- rate


def test_rate_empirical_mean_matches_probability() -> None:
    probs = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0]])
    steps = 4000
    spikes = enc.rate(probs, steps, generator=gen(1))
    assert spikes.shape == (steps, 1, 5)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    mean = spikes.mean(dim=0)[0]
    for p, m in zip(probs[0].tolist(), mean.tolist()):
        sigma = math.sqrt(p * (1 - p) / steps)
        assert abs(m - p) <= 5 * sigma + 1e-12, (p, m)
    # the extremes are exact, not just statistical
    assert spikes[:, 0, 0].sum() == 0
    assert spikes[:, 0, 4].sum() == steps


def test_rate_gain_scales_then_clamps() -> None:
    x = torch.full((2, 3), 0.3)
    steps = 4000
    doubled = enc.rate(x, steps, generator=gen(2), gain=2.0)
    assert abs(doubled.mean().item() - 0.6) < 5 * math.sqrt(0.24 / (steps * 6))
    saturated = enc.rate(x, 50, generator=gen(2), gain=5.0)  # 1.5 -> p = 1
    assert torch.equal(saturated, torch.ones(50, 2, 3))
    silent = enc.rate(x, 50, generator=gen(2), gain=0.0)
    assert torch.equal(silent, torch.zeros(50, 2, 3))


def test_rate_steps_are_independent() -> None:
    # lag-1 autocorrelation of a Bernoulli(0.5) train should be ~0 (+-5/sqrt(T))
    steps = 4000
    s = enc.rate(torch.tensor([[0.5]]), steps, generator=gen(3))[:, 0, 0] - 0.5
    corr = (s[1:] * s[:-1]).mean() / 0.25
    assert abs(corr.item()) < 5 / math.sqrt(steps)


def test_rate_reproducible_and_seed_dependent_and_pure() -> None:
    x = torch.rand(4, 2, 3, generator=gen(0))
    state = torch.get_rng_state()
    a = enc.rate(x, 20, generator=gen(7))
    b = enc.rate(x, 20, generator=gen(7))
    c = enc.rate(x, 20, generator=gen(8))
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert a.shape == (20, 4, 2, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("bad", [torch.tensor([-0.1, 0.5]), torch.tensor([0.5, 1.01]), torch.tensor([float("nan")])])
def test_rate_rejects_values_outside_unit_interval(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"x with values in \[0, 1\]"):
        enc.rate(bad, 3, generator=gen(0))


def test_rate_argument_errors() -> None:
    x = torch.full((2,), 0.5)
    with pytest.raises(ValueError, match="generator"):
        enc.rate(x, 3, generator=None)  # type: ignore[arg-type]
    for steps in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_steps"):
            enc.rate(x, steps, generator=gen(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gain"):
        enc.rate(x, 3, generator=gen(0), gain=-1.0)


# -------------------------------------------------------------------------------------------- latency


def spike_times(spikes: torch.Tensor) -> list[int | None]:
    """Reference: time index of the single spike of each element of a [T, N] train (None = silent)."""
    out: list[int | None] = []
    for n in range(spikes.shape[1]):
        hits = [t for t in range(spikes.shape[0]) if spikes[t, n] != 0]
        assert len(hits) <= 1
        out.append(hits[0] if hits else None)
    return out


def test_latency_linear_hand_computed() -> None:
    x = torch.tensor([[0.0, 0.25, 0.5, 0.8, 1.0, 0.33]])
    spikes = enc.latency(x, 11, mode="linear")
    assert spikes.shape == (11, 1, 6)
    # t = round((1 - x) * 10): 10, 7.5 -> 8 (half to even), 5, 2, 0, 6.7 -> 7
    assert spike_times(spikes[:, 0]) == [10, 8, 5, 2, 0, 7]
    x5 = torch.tensor([[0.0, 0.25, 0.5, 0.8, 1.0]])
    # t = round((1 - x) * 4): 4, 3, 2, 0.8 -> 1, 0
    assert spike_times(enc.latency(x5, 5, mode="linear")[:, 0]) == [4, 3, 2, 1, 0]


def test_latency_log_hand_computed() -> None:
    x = torch.tensor([[0.0, 0.2, 0.25, 0.4, 0.6, 1.0]])
    # threshold 0.2, tau 1: t_raw = ln(x / (x - 0.2)) = -, -, ln 5, ln 2, ln 1.5, ln 1.25
    # normalize (T=11): * 10 / ln 5 -> 10, 4.31, 2.52, 1.39 -> 10, 4, 3, 1; x <= 0.2 never fires
    spikes = enc.latency(x, 11, mode="log", threshold=0.2)
    assert spike_times(spikes[:, 0]) == [None, None, 10, 4, 3, 1]
    # no normalization, tau = 3: 4.83 -> 5 clipped to 3, 2.08 -> 2, 1.22 -> 1, 0.67 -> 1
    raw = enc.latency(x, 4, mode="log", threshold=0.2, tau=3.0, normalize=False)
    assert spike_times(raw[:, 0]) == [None, None, 3, 2, 1, 1]


def test_latency_one_spike_and_monotone() -> None:
    x = torch.rand(8, 5, generator=gen(4)) * 0.98 + 0.02
    for mode in enc.LATENCY_MODES:
        spikes = enc.latency(x, 25, mode=mode)
        assert torch.equal(spikes.sum(dim=0), torch.ones_like(x))
        t = spikes.argmax(dim=0).flatten()
        order = torch.argsort(x.flatten())
        assert bool((t[order][1:] <= t[order][:-1]).all())  # larger x -> not later


def test_latency_matches_snntorch_where_semantics_agree() -> None:
    # linear: snnTorch caps at (1 - threshold)(T - 1); identical for x >= threshold
    x = torch.linspace(0.01, 1.0, 37).reshape(1, 37)
    ours = enc.latency(x, 9, mode="linear")
    theirs = spikegen.latency(x, num_steps=9, normalize=True, linear=True)
    assert torch.equal(ours, theirs)
    # log: snnTorch's normalization also includes sub-threshold inputs; identical when all x > threshold
    x = torch.linspace(0.05, 1.0, 23).reshape(1, 23)
    ours = enc.latency(x, 12, mode="log", threshold=0.04, tau=2.0)
    theirs = spikegen.latency(x, num_steps=12, threshold=0.04, tau=2.0, normalize=True, linear=False)
    assert torch.equal(ours, theirs)


def test_latency_errors() -> None:
    x = torch.full((1, 2), 0.5)
    with pytest.raises(ValueError, match=r"mode 'cubic'.*\('linear', 'log'\)"):
        enc.latency(x, 4, mode="cubic")
    with pytest.raises(ValueError, match="tau"):
        enc.latency(x, 4, mode="log", tau=0.0)
    with pytest.raises(ValueError, match="threshold"):
        enc.latency(x, 4, mode="log", threshold=1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc.latency(x + 1, 4)


# ---------------------------------------------------------------------------------------------- delta


def delta_reference(seq: list[list[float]], thr: float, initial: str) -> tuple[list[list[int]], list[list[int]]]:
    """Plain-loop delta modulation of a [T][N] list."""
    on = [[0] * len(seq[0]) for _ in seq]
    off = [[0] * len(seq[0]) for _ in seq]
    for n in range(len(seq[0])):
        prev = 0.0 if initial == "zero" else seq[0][n]
        for t in range(len(seq)):
            d = seq[t][n] - prev
            on[t][n] = int(d >= thr)
            off[t][n] = int(d <= -thr)
            prev = seq[t][n]
    return on, off


def test_delta_hand_example() -> None:
    x = torch.tensor([1.0, 1.0, 2.0, 0.25, 0.75, 0.5]).reshape(6, 1, 1)
    # d (zero init) = 1, 0, 1, -1.75, 0.5, -0.25 with threshold 0.5
    on = enc.delta(x, 0.5, polarity="on")
    off = enc.delta(x, 0.5, polarity="off")
    assert on.flatten().tolist() == [1, 0, 1, 0, 1, 0]
    assert off.flatten().tolist() == [0, 0, 0, 1, 0, 0]
    first = enc.delta(x, 0.5, polarity="on", initial="first")
    assert first.flatten().tolist() == [0, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("initial", enc.DELTA_INITIALS)
def test_delta_matches_python_loop(initial: str) -> None:
    steps, batch, feat = 7, 3, 4
    # multiples of 1/4 so the >= comparisons are exact
    x = torch.randint(-4, 5, (steps, batch, feat), generator=gen(5)).float() / 4
    both = enc.delta(x, 0.5, initial=initial)
    assert both.shape == (steps, batch, 2, feat)
    for b in range(batch):
        seq = x[:, b].tolist()
        ref_on, ref_off = delta_reference(seq, 0.5, initial)
        assert both[:, b, 0].tolist() == ref_on
        assert both[:, b, 1].tolist() == ref_off
    assert torch.equal(enc.delta(x, 0.5, polarity="on", initial=initial), both[:, :, 0])
    assert torch.equal(enc.delta(x, 0.5, polarity="off", initial=initial), both[:, :, 1])


def test_delta_matches_snntorch() -> None:
    x = torch.randint(-4, 5, (6, 2, 3), generator=gen(6)).float() / 4
    for initial, padding in (("zero", False), ("first", True)):
        ours = enc.delta(x, 0.5, initial=initial)
        theirs = spikegen.delta(x, threshold=0.5, padding=padding, off_spike=True)
        assert torch.equal(ours[:, :, 0], (theirs == 1).float())
        assert torch.equal(ours[:, :, 1], (theirs == -1).float())


def test_delta_errors() -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"polarity 'up'.*\('both', 'on', 'off'\)"):
        enc.delta(x, 0.1, polarity="up")
    with pytest.raises(ValueError, match=r"initial 'last'.*\('zero', 'first'\)"):
        enc.delta(x, 0.1, initial="last")
    with pytest.raises(ValueError, match="threshold"):
        enc.delta(x, 0.0)
    with pytest.raises(ValueError, match="x_seq"):
        enc.delta(torch.zeros(3), 0.1)


# --------------------------------------------------------------------------------------------- direct


def test_direct_repeats_and_passes_gradient() -> None:
    x = torch.tensor([[0.5, -2.0], [3.0, 0.0]], requires_grad=True)
    out = enc.direct(x, 3)
    assert out.shape == (3, 2, 2)
    assert out.is_contiguous()
    for t in range(3):
        assert out[t].tolist() == [[0.5, -2.0], [3.0, 0.0]]
    # a real copy: writing into it leaves x alone
    out.detach()[0, 0, 0] = 9.0
    assert x[0, 0].item() == 0.5
    (out * torch.arange(3.0).view(3, 1, 1)).sum().backward()
    assert torch.equal(x.grad, torch.full((2, 2), 0.0 + 1.0 + 2.0))


# --------------------------------------------------------------------------------------------- encode


def test_encode_dispatches() -> None:
    x = torch.rand(2, 3, generator=gen(9))
    assert torch.equal(enc.encode("rate", x, 5, generator=gen(1), gain=0.5),
                       enc.rate(x, 5, generator=gen(1), gain=0.5))
    assert torch.equal(enc.encode("latency", x, 6, mode="log"), enc.latency(x, 6, mode="log"))
    # deterministic encoders accept (and ignore) a generator
    assert torch.equal(enc.encode("direct", x, 4, generator=gen(1)), x.expand(4, 2, 3))
    seq = torch.rand(5, 2, 3, generator=gen(10))
    assert torch.equal(enc.encode("delta", seq, None, threshold=0.2, polarity="on"),
                       enc.delta(seq, 0.2, polarity="on"))
    assert enc.encode("delta", seq, 5, threshold=0.2).shape == (5, 2, 2, 3)


def test_encode_errors() -> None:
    x = torch.rand(2, 3, generator=gen(9))
    with pytest.raises(ValueError, match=r"unknown encoder name 'poisson'.*'rate', 'latency', 'delta', 'direct'"):
        enc.encode("poisson", x, 5)
    with pytest.raises(ValueError, match="stochastic.*generator"):
        enc.encode("rate", x, 5)
    with pytest.raises(ValueError, match=r"unexpected keyword.*\['tau'\].*'rate'"):
        enc.encode("rate", x, 5, generator=gen(0), tau=2.0)
    with pytest.raises(ValueError, match="threshold"):
        enc.encode("delta", x, None)
    with pytest.raises(ValueError, match="num_steps"):
        enc.encode("delta", torch.zeros(4, 2), 3, threshold=0.1)
    assert set(enc.STOCHASTIC_ENCODERS) <= set(enc.ENCODERS)
