"""Synthetic event-camera recordings of static images, the way N-MNIST was recorded.

N-MNIST (Orchard et al., 2015) put an event camera (ATIS) in front of a monitor showing MNIST digits and moved
the camera in three saccades tracing a triangle (about 100 ms each); the 28x28 digits became 34x34 recordings
because of the motion. Here the motion is applied to the image instead, with a model of a DVS pixel.

Rendering. An image ``I0 [h, w]`` (intensities in ``[0, 1]``) is resized to ``[sh, sw]`` and placed at a
sub-pixel offset ``(oy, ox)`` on a canvas ``[H, W]`` (zero outside), both bilinearly, as separable matrices::

    I(oy, ox) = Sy(oy) Ry I0 Rx^T Sx(ox)^T
    R[j, i]  = max(0, 1 - |clip((j + 1/2) n_in / n_out - 1/2, 0, n_in - 1) - i|)      (resize n_in -> n_out)
    S(o)[Y, i] = max(0, 1 - |Y - o - i|)                                            (shift by o pixels)

Saccades. With amplitude ``A`` the offset ``(oy, ox) = (border, border) + v - A/2`` follows the triangle
``v: (0, 0) -> (A, A/2) -> (0, A) -> (0, 0)`` (in ``(dy, dx)``), each leg lasting ``saccade_ticks`` at constant
speed, sampled ``steps`` times per leg (frame times ``t_k``, integer ticks, the first frame at ``t = 0``).

Pixel model (every pixel independently). Log intensity ``L = log(eps + I)``, linear between frames. Each pixel
keeps a reference ``ref`` (initially ``L`` of the first frame, so a static scene emits nothing) and the time of
its last event ``t_last``::

    while L(t_k) - ref >= C_on  or  ref - L(t_k) >= C_off:
        level = ref + C_on (ON, p = 1)   or   ref - C_off (OFF, p = 0)
        t_c   = ceil(time at which the linear L crosses level within [t_{k-1}, t_k])   (t_{k-1} if already past)
        t_ev  = max(t_c, t_last + refractory)
        if t_ev > t_k: stop (the pixel is refractory; the crossing stays pending for the next frame)
        emit (t_ev, pixel, p); ref = level; t_last = t_ev

so a pixel never fires twice within ``refractory`` ticks, and a log-intensity ramp of height ``D`` crosses
``floor(D / C_on)`` ON levels. Optional threshold mismatch draws per-pixel thresholds
``C * exp(sigma * z)``, ``z ~ N(0, 1)``. Optional background noise adds ``Poisson(rate * pixels * duration)``
events per sample at uniform random pixels, times and polarities (they bypass the pixel model). All randomness
comes from the ``numpy.random.Generator`` passed in (or seeded from the int given); nothing global.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .aer import EVENT_DTYPE, EventBatch

__all__ = ["SensorModel", "Saccades", "resize_matrix", "shift_matrix", "render", "saccade_path",
           "video_to_events", "saccade_events", "as_generator"]

_TOL = 1e-9  # tolerance on threshold comparisons (sums of thresholds are not exact in floating point)


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """``rng`` itself, or a fresh ``np.random.default_rng(rng)`` for an int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy.random.Generator or an int seed, got {rng!r}")


@dataclass(frozen=True)
class SensorModel:
    """DVS pixel parameters.

    ``c_on``/``c_off``: contrast thresholds on ``log(eps + I)``; ``refractory``: ticks; ``noise_rate``: background
    events per pixel per second; ``threshold_sigma``: log-normal spread of per-pixel thresholds.
    """

    c_on: float = 0.2
    c_off: float = 0.2
    eps: float = 0.1
    refractory: int = 1000
    noise_rate: float = 0.0
    threshold_sigma: float = 0.0

    def __post_init__(self) -> None:
        for name in ("c_on", "c_off", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("noise_rate", "threshold_sigma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        r = self.refractory
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
            raise ValueError(f"refractory must be an int >= 0 (ticks), got {r!r}")


@dataclass(frozen=True)
class Saccades:
    """The N-MNIST-like camera motion: three legs of a triangle of ``amplitude`` pixels, ``saccade_ticks`` each
    (100 ms at the default 1 us tick), ``steps`` rendered frames per leg."""

    amplitude: float = 2.0
    saccade_ticks: int = 100_000
    steps: int = 20
    time_unit: float = 1e-6

    def __post_init__(self) -> None:
        if not (math.isfinite(self.amplitude) and self.amplitude >= 0):
            raise ValueError(f"amplitude must be >= 0 pixels, got {self.amplitude!r}")
        for name in ("saccade_ticks", "steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.steps > self.saccade_ticks:
            raise ValueError("steps must not exceed saccade_ticks (frame times are integer ticks)")
        if not (math.isfinite(self.time_unit) and self.time_unit > 0):
            raise ValueError(f"time_unit must be > 0 seconds, got {self.time_unit!r}")

    @property
    def duration(self) -> int:
        """Window length in ticks: every event lies in ``[0, duration)``."""
        return 3 * int(self.saccade_ticks) + 1


# --------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear resize ``n_in -> n_out`` samples as a matrix ``[n_out, n_in]`` (pixel centres aligned, edges
    clamped); rows sum to 1."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    return np.maximum(0.0, 1.0 - np.abs(src[:, None] - np.arange(n_in)[None, :]))


def shift_matrix(n_in: int, n_out: int, offset: float) -> np.ndarray:
    """Place ``n_in`` samples at (sub-pixel) ``offset`` in ``n_out`` with linear interpolation: ``[n_out, n_in]``,
    ``S[Y, i] = max(0, 1 - |Y - offset - i|)`` (zero outside)."""
    rel = np.arange(n_out)[:, None] - float(offset) - np.arange(n_in)[None, :]
    return np.maximum(0.0, 1.0 - np.abs(rel))


def render(images: np.ndarray, canvas: tuple[int, int], offset: tuple[float, float],
           size: tuple[int, int] | None = None) -> np.ndarray:
    """``images [N, h, w]`` resized to ``size`` (default: unchanged) and placed at ``offset = (oy, ox)`` (top-left
    corner, sub-pixel) on a zero canvas ``[H, W]``: ``[N, H, W]``."""
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim != 3:
        raise ValueError(f"expected images [N, h, w], got shape {list(imgs.shape)}")
    _, h, w = imgs.shape
    sh, sw = size if size is not None else (h, w)
    my = shift_matrix(sh, canvas[0], offset[0]) @ resize_matrix(h, sh)  # [H, h]
    mx = shift_matrix(sw, canvas[1], offset[1]) @ resize_matrix(w, sw)  # [W, w]
    return np.matmul(my, imgs @ mx.T)


def saccade_path(saccades: Saccades, border: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame times ``[S]`` (int64 ticks, ``S = 3 * steps + 1``) and image offsets ``[S, 2]`` ``(oy, ox)``."""
    a = float(saccades.amplitude)
    vertices = np.array([[0.0, 0.0], [a, a / 2], [0.0, a], [0.0, 0.0]])  # (dy, dx)
    d, steps = int(saccades.saccade_ticks), int(saccades.steps)
    times = [0]
    offsets = [vertices[0]]
    for leg in range(3):
        for j in range(1, steps + 1):
            frac = j / steps
            times.append(leg * d + int(round(frac * d)))
            offsets.append(vertices[leg] + frac * (vertices[leg + 1] - vertices[leg]))
    return np.asarray(times, dtype=np.int64), np.asarray(offsets) + float(border) - a / 2


# --------------------------------------------------------------------------------------------------
# pixel model
# --------------------------------------------------------------------------------------------------


def _thresholds(value: float, sigma: float, n: int, rng: np.random.Generator) -> np.ndarray | float:
    if sigma == 0:
        return float(value)
    return value * np.exp(sigma * rng.standard_normal(n))


def video_to_events(frames: Iterable[np.ndarray], times: Sequence[int], *, sensor: SensorModel = SensorModel(),
                    rng: np.random.Generator | int = 0, time_unit: float = 1e-6,
                    duration: int | None = None) -> EventBatch:
    """Intensity video -> DVS events (the pixel model in the module docstring).

    Args:
        frames: iterable of ``[N, *S]`` intensity frames (``>= 0``), one per entry of ``times``; consumed once,
            so a generator renders lazily. ``N`` samples are simulated together, each with its own pixels.
        times: strictly increasing integer frame times (ticks, ``>= 0``).
        sensor: pixel parameters.
        rng: generator (or int seed) for threshold mismatch and noise; not used when both are off.
        time_unit: seconds per tick (for the noise rate and the returned batch).
        duration: window length of the batch (default ``times[-1] + 1``).

    Returns:
        An :class:`~spikefed.events.aer.EventBatch` over ``S`` with polarity, each sample sorted by
        ``(t, addr, p)``.
    """
    t_arr = np.asarray(times, dtype=np.int64)
    if t_arr.ndim != 1 or t_arr.size < 1 or t_arr[0] < 0 or np.any(np.diff(t_arr) <= 0):
        raise ValueError("times must be a non-empty, strictly increasing sequence of ticks >= 0")
    gen = as_generator(rng)
    it: Iterator[np.ndarray] = iter(frames)
    try:
        first = np.asarray(next(it), dtype=np.float64)
    except StopIteration:
        raise ValueError("frames is empty") from None
    if first.ndim < 2:
        raise ValueError(f"frames must be [N, *S] arrays, got shape {list(first.shape)}")
    n, space = first.shape[0], tuple(first.shape[1:])
    n_addr = math.prod(space)
    total = n * n_addr
    eps = float(sensor.eps)
    refr = int(sensor.refractory)
    c_on = _thresholds(sensor.c_on, sensor.threshold_sigma, total, gen)
    c_off = _thresholds(sensor.c_off, sensor.threshold_sigma, total, gen)

    def log_frame(frame: np.ndarray) -> np.ndarray:
        f = np.asarray(frame, dtype=np.float64)
        if f.shape != first.shape:
            raise ValueError(f"every frame must have shape {list(first.shape)}, got {list(f.shape)}")
        if f.size and not f.min() >= 0:
            raise ValueError("intensities must be finite and >= 0")
        return np.log(eps + f).reshape(-1)

    def pick(c: np.ndarray | float, idx: np.ndarray) -> np.ndarray | float:
        return c[idx] if isinstance(c, np.ndarray) else c

    l_prev = log_frame(first)
    ref = l_prev.copy()
    last = np.full(total, np.iinfo(np.int64).min // 2, dtype=np.int64)
    pix_out: list[np.ndarray] = []
    t_out: list[np.ndarray] = []
    p_out: list[np.ndarray] = []
    k = 0
    for k, frame in enumerate(it, start=1):
        if k >= t_arr.size:
            raise ValueError(f"more frames than times ({t_arr.size})")
        t0, t1 = int(t_arr[k - 1]), int(t_arr[k])
        l_cur = log_frame(frame)
        diff = l_cur - ref
        idx = np.flatnonzero((diff >= pick(c_on, slice(None)) - _TOL) | (-diff >= pick(c_off, slice(None)) - _TOL))
        while idx.size:
            lc, r, lp = l_cur[idx], ref[idx], l_prev[idx]
            con, coff = pick(c_on, idx), pick(c_off, idx)
            up = lc - r >= con - _TOL
            level = np.where(up, r + con, r - coff)
            dl = lc - lp
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(dl != 0, (level - lp) / np.where(dl != 0, dl, 1.0), 0.0)
            frac = np.clip(frac, 0.0, 1.0)
            t_cross = np.ceil(t0 + frac * (t1 - t0) - 1e-6).astype(np.int64)
            t_ev = np.maximum(t_cross, last[idx] + refr)
            fire = t_ev <= t1
            fired = idx[fire]
            if not fired.size:
                break
            pix_out.append(fired)
            t_out.append(t_ev[fire])
            p_out.append(up[fire].astype(np.uint8))
            ref[fired] = level[fire]
            last[fired] = t_ev[fire]
            d2 = l_cur[fired] - ref[fired]
            again = (d2 >= pick(c_on, fired) - _TOL) | (-d2 >= pick(c_off, fired) - _TOL)
            idx = fired[again]
        l_prev = l_cur
    if k + 1 != t_arr.size:
        raise ValueError(f"got {k + 1} frames for {t_arr.size} times")

    pix = np.concatenate(pix_out) if pix_out else np.empty(0, np.int64)
    t_ev_all = np.concatenate(t_out) if t_out else np.empty(0, np.int64)
    p_all = np.concatenate(p_out) if p_out else np.empty(0, np.uint8)
    sample = pix // n_addr
    addr = pix % n_addr
    if sensor.noise_rate > 0:
        span = int(t_arr[-1] - t_arr[0]) + 1
        lam = sensor.noise_rate * n_addr * span * time_unit
        counts = gen.poisson(lam, size=n)
        m = int(counts.sum())
        sample = np.concatenate([sample, np.repeat(np.arange(n, dtype=np.int64), counts)])
        addr = np.concatenate([addr, gen.integers(0, n_addr, size=m)])
        t_ev_all = np.concatenate([t_ev_all, gen.integers(t_arr[0], t_arr[-1] + 1, size=m)])
        p_all = np.concatenate([p_all, gen.integers(0, 2, size=m).astype(np.uint8)])
    order = np.lexsort((p_all, addr, t_ev_all, sample))
    events = np.empty(order.size, dtype=EVENT_DTYPE)
    events["t"] = t_ev_all[order]
    events["addr"] = addr[order]
    events["p"] = p_all[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(sample, minlength=n))])
    window = int(t_arr[-1]) + 1 if duration is None else int(duration)
    return EventBatch(events, offsets, space, True, time_unit, window)


def saccade_events(images: np.ndarray, *, size: tuple[int, int] | int | None = None, border: int = 2,
                   saccades: Saccades = Saccades(), sensor: SensorModel = SensorModel(),
                   rng: np.random.Generator | int = 0, block: int = 512) -> EventBatch:
    """Static images -> N-MNIST-like event recordings.

    Args:
        images: ``[N, h, w]`` intensities in ``[0, 1]``.
        size: resize the images to ``size`` (int: square) before recording (default: unchanged).
        border: pixels of canvas around the (resized) image: the sensor is ``[sh + 2 border, sw + 2 border]``
            (28x28 MNIST with ``border=3`` gives N-MNIST's 34x34).
        saccades: the motion (``amplitude`` should not exceed ``2 * border``, or the digit leaves the sensor).
        sensor: pixel model.
        rng: generator or seed (threshold mismatch, noise).
        block: images simulated together (memory ~ ``block * H * W * 60`` bytes).

    Returns:
        :class:`~spikefed.events.aer.EventBatch` over ``(H, W)`` with polarity, window ``saccades.duration``.
    """
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim != 3:
        raise ValueError(f"expected images [N, h, w], got shape {list(imgs.shape)}")
    if imgs.size and not (np.isfinite(imgs).all() and imgs.min() >= 0):
        raise ValueError("image intensities must be finite and >= 0")
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 0:
        raise ValueError(f"border must be an int >= 0, got {border!r}")
    n, h, w = imgs.shape
    sh, sw = (size, size) if isinstance(size, (int, np.integer)) else (size or (h, w))
    canvas = (int(sh) + 2 * int(border), int(sw) + 2 * int(border))
    times, offsets = saccade_path(saccades, border)
    gen = as_generator(rng)
    my = [shift_matrix(sh, canvas[0], o[0]) @ resize_matrix(h, sh) for o in offsets]
    mx = [shift_matrix(sw, canvas[1], o[1]) @ resize_matrix(w, sw) for o in offsets]
    parts: list[EventBatch] = []
    for s0 in range(0, max(n, 1), block):
        chunk = imgs[s0:s0 + block]

        def frames(chunk: np.ndarray = chunk) -> Iterator[np.ndarray]:
            for a, b in zip(my, mx):
                yield np.matmul(a, chunk @ b.T)

        parts.append(video_to_events(frames(), times, sensor=sensor, rng=gen, time_unit=saccades.time_unit,
                                     duration=saccades.duration))
    events = np.concatenate([p.events for p in parts])
    counts = np.concatenate([p.counts() for p in parts])
    return EventBatch(events, np.concatenate([[0], np.cumsum(counts)]), canvas, True, saccades.time_unit,
                      saccades.duration)
