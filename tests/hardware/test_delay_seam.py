"""Delay lines near the ring's seam under the calibration map: a latent delay ``d`` close to ``D`` mostly means
"no delay" (its interpolation taps are ``D - 1`` and ``0``), and must keep that meaning on a chip whose step or
delay buffer differs from the nominal network's."""

from __future__ import annotations

import math

import torch

from spikefed.federated.types import params_of
from spikefed.hardware.calibration import calibrate
from spikefed.hardware.devices import Device, DeviceProfile, full_program

from .test_fleet_models import DelayNet

D = 4
LATENT = torch.tensor([0.0, 1.0, 2.2, 3.4, 3.6, 3.9])  # in nominal steps, on the ring of D = 4 slots


def _programmed(profile: DeviceProfile) -> tuple[Device, torch.Tensor, torch.Tensor, torch.Tensor]:
    m = DelayNet(max_delay=D)
    dev = Device(profile, m, 0)
    cal = calibrate(dev, torch.Generator().manual_seed(1), repeats=2)
    latent = full_program(m, params_of(m))
    latent["delay.delays"] = LATENT.clone()
    program = cal.to_device(latent)
    back = cal.to_latent(program)["delay.delays"]
    return dev, program["delay.delays"], back, cal.delay_factors["delay.delays"]


def _signed(d: float) -> float:
    """Plain reference: the real lag a ring delay mostly means (the tap of larger weight, as a signed lag)."""
    r = d % D
    return r - D if r > D - 0.5 else r


def test_program_delays_follow_the_signed_lag_over_dt_and_come_back_on_the_ring() -> None:
    _, prog, back, h = _programmed(DeviceProfile("coarse", dt=2.0))
    want = torch.tensor([_signed(float(d)) / (2.0 * float(hk)) for d, hk in zip(LATENT, h)])
    assert torch.allclose(prog, want, atol=1e-6), prog
    circ = torch.remainder(back - LATENT + D / 2, D) - D / 2  # difference on the ring
    assert float(circ.abs().max()) < 1e-5


def test_a_spike_on_a_coarse_step_chip_arrives_at_the_latent_lag() -> None:
    dev, prog, _, _ = _programmed(DeviceProfile("coarse", dt=2.0))
    trace = dev.probe_delay("delay.delays", prog, 6, torch.Generator().manual_seed(2))  # device steps
    for f, d in enumerate(LATENT.tolist()):
        arrival = int(trace[:, f].argmax()) * 2.0  # nominal steps
        # the device step of larger weight covers the latent lag to within half a device step (dt / 2 = 1); the
        # map d / dt would send d = 3.6 and 3.9 (mostly lag 0) to lag 4 (device step 2)
        assert abs(arrival - _signed(d)) <= 1.0 + 1e-6, (d, arrival)


def test_a_seam_delay_is_not_clamped_to_the_end_of_a_short_buffer() -> None:
    dev, prog, _, _ = _programmed(DeviceProfile("short", delay_buffer=3))
    trace = dev.probe_delay("delay.delays", prog, 6, torch.Generator().manual_seed(3))
    for f, d in enumerate(LATENT.tolist()):
        lag = _signed(d)
        arrival = int(trace[:, f].argmax())
        want = min(max(round(lag), 0), 2)  # the buffer holds lags 0..2
        assert arrival == want or math.isclose(abs(lag - arrival), 0.5, abs_tol=0.2), (d, arrival, want)
