"""Event data sets as lazy sources: the events of a sample are read from disk when it is asked for, never all at once.

An :class:`EventSource` knows, up front, only what is small: the labels, the sensor shape, the window and the
natural groups of every sample (``subject``, ``session``, ``speaker``); :meth:`EventSource.events` reads one
sample's events (sorted by time, microsecond ticks, ``addr = y * W + x``) and :meth:`EventSource.batch` a
few of them as an :class:`~spikefed.events.aer.EventBatch`. :mod:`spikefed.events.stream` bins a batch at a
time into frames, so memory holds one batch of events plus the frames.

Sources (official file layouts; :func:`open_source` picks by name and split):

- ``nmnist``: ``ROOT/Train/<digit>/<id>.bin`` and ``ROOT/Test/...`` (tonic's ``ROOT/NMNIST/Train`` too);
  N-MNIST's 40-bit records (:mod:`spikefed.events.loaders`). No natural groups.
- ``shd`` / ``ssc``: ``ROOT/shd_train.h5``, ``shd_test.h5`` (``ssc_train.h5``, ``ssc_test.h5``); groups
  ``speaker`` from ``extra/speaker`` when the file has it.
- ``dvs_gesture``: the official ``ROOT/trials_to_train.txt`` + ``userNN_<lighting>.aedat`` +
  ``userNN_<lighting>_labels.csv`` (:mod:`spikefed.events.aedat`), or tonic's layout
  ``ROOT/ibmGestureTrain/userNN_<lighting>/<label>.npy`` (``[N, 4]`` columns x, y, p, t in milliseconds, read
  with ``allow_pickle=False``); groups ``subject`` (NN) and ``session`` (the lighting condition).
- :func:`batch_source`: an in-memory :class:`EventBatch` (the synthetic sets); :func:`tonic_source`: any tonic
  dataset object (``len``, ``ds[i] -> (events, target)``, ``sensor_size``).

A missing file is a ``FileNotFoundError`` of one line naming the expected path and layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .aedat import DVS_GESTURE_CLASSES, DVS_GESTURE_SHAPE, read_aedat31, read_gesture_labels, read_trial_list
from .aer import EVENT_DTYPE, EventBatch, EventFormatError
from .loaders import NMNIST_SHAPE, SHD_UNITS, read_nmnist, shd_datasets, shd_sample_events

__all__ = ["EventSource", "SOURCE_NAMES", "DEFAULT_WINDOW_US", "batch_source", "nmnist_source", "shd_source",
           "dvs_gesture_source", "tonic_source", "open_source", "SPLITS"]

#: Data sets read from files (``data.name``).
SOURCE_NAMES: tuple[str, ...] = ("nmnist", "dvs_gesture", "shd", "ssc")
#: Official splits.
SPLITS: tuple[str, ...] = ("train", "test")
#: Default window of a sample in microseconds: N-MNIST's three 100 ms saccades (plus margin), a DVS Gesture
#: segment's first 1.5 s, SHD/SSC's 1 s utterances.
DEFAULT_WINDOW_US: dict[str, int] = {"nmnist": 320_000, "dvs_gesture": 1_500_000, "shd": 1_000_000,
                                     "ssc": 1_000_000}
CLASSES: dict[str, int] = {"nmnist": 10, "dvs_gesture": DVS_GESTURE_CLASSES, "shd": 20, "ssc": 35}


@dataclass(frozen=True, eq=False)
class EventSource:
    """Labelled event samples read on demand. ``read(i)`` returns sample ``i``'s events (EVENT_DTYPE, sorted by
    ``t``, ticks of ``time_unit`` seconds, relative to the sample's start); events at or after ``duration``
    are dropped when binning. ``groups``: natural group id of every sample per kind (``subject`` ...)."""

    name: str
    shape: tuple[int, ...]
    polarity: bool
    time_unit: float
    duration: int
    labels: np.ndarray
    num_classes: int
    read: Callable[[int], np.ndarray]
    groups: Mapping[str, np.ndarray] = field(default_factory=dict)
    key: str = ""  # identifies the data on disk (for caches); empty: in memory

    def __post_init__(self) -> None:
        y = np.asarray(self.labels, dtype=np.int64)
        if y.ndim != 1:
            raise ValueError(f"{self.name}: labels must be 1-D, got shape {list(y.shape)}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"{self.name}: labels must lie in [0, {self.num_classes}), got "
                             f"[{int(y.min())}, {int(y.max())}]")
        object.__setattr__(self, "labels", y)
        for kind, g in self.groups.items():
            if np.asarray(g).shape != y.shape:
                raise ValueError(f"{self.name}: groups[{kind!r}] has {np.asarray(g).size} entries for {y.size} "
                                 "samples")
        if int(self.duration) < 1:
            raise ValueError(f"{self.name}: duration must be >= 1 tick, got {self.duration!r}")

    def __len__(self) -> int:
        return int(self.labels.size)

    def events(self, i: int) -> np.ndarray:
        """Sample ``i``'s events."""
        if not 0 <= int(i) < len(self):
            raise IndexError(f"{self.name}: sample {i} out of range for {len(self)} samples")
        return self.read(int(i))

    def batch(self, indices: Sequence[int] | np.ndarray) -> EventBatch:
        """The samples ``indices`` (in that order) as one :class:`EventBatch` over this source's window."""
        return EventBatch.from_list([self.events(int(i)) for i in np.asarray(indices, dtype=np.int64)],
                                    self.shape, polarity=self.polarity, time_unit=self.time_unit,
                                    duration=self.duration)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "EventSource":
        """The samples ``indices`` as a source of their own (reads still go to the same files)."""
        idx = np.asarray(indices, dtype=np.int64)
        parent = self.read
        return EventSource(self.name, self.shape, self.polarity, self.time_unit, self.duration, self.labels[idx],
                           self.num_classes, lambda j: parent(int(idx[j])),
                           {k: np.asarray(g)[idx] for k, g in self.groups.items()}, self.key)


def _codes(values: Sequence[str]) -> np.ndarray:
    """Strings -> int ids in sorted order of the distinct strings."""
    names = sorted(set(values))
    lookup = {n: i for i, n in enumerate(names)}
    return np.asarray([lookup[v] for v in values], dtype=np.int64)


def batch_source(batch: EventBatch, labels: Any, *, name: str, num_classes: int | None = None,
                 groups: Mapping[str, Any] | None = None) -> EventSource:
    """An in-memory batch (e.g. the synthetic sets) as a source."""
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(batch),):
        raise ValueError(f"expected {len(batch)} labels, got shape {list(y.shape)}")
    classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    return EventSource(name, batch.shape, batch.polarity, batch.time_unit, batch.duration, y, classes,
                       lambda i: batch[i], {k: np.asarray(v, dtype=np.int64) for k, v in (groups or {}).items()})


# -- N-MNIST ---------------------------------------------------------------------------------------------------
def nmnist_source(root: str | Path, split: str = "train", *, window_us: int | None = None) -> EventSource:
    """N-MNIST's official split ``Train``/``Test`` under ``root`` (or ``root/NMNIST``, tonic's layout)."""
    base = Path(root)
    folder = "Train" if _split(split) == "train" else "Test"
    top = base / folder if (base / folder).is_dir() else base / "NMNIST" / folder
    files: list[Path] = []
    labels: list[int] = []
    if top.is_dir():
        for d in sorted((d for d in top.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)):
            if int(d.name) > 9:
                raise EventFormatError(None, f"label folder {d.name!r} is not a digit 0..9", str(d))
            found = sorted(d.glob("*.bin"))
            files += found
            labels += [int(d.name)] * len(found)
    if not files:
        raise FileNotFoundError(f"N-MNIST: no {folder}/<digit>/<id>.bin files under {base} (expected the official "
                                "layout Train/0..9/*.bin and Test/0..9/*.bin)")
    window = DEFAULT_WINDOW_US["nmnist"] if window_us is None else int(window_us)
    return EventSource("nmnist", NMNIST_SHAPE, True, 1e-6, window, np.asarray(labels), 10,
                       lambda i: read_nmnist(files[i]), {}, key=f"nmnist:{top.resolve()}:{len(files)}")


def _split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


# -- SHD / SSC -------------------------------------------------------------------------------------------------
class _H5Reader:
    """Reads samples of one SHD/SSC file through a handle opened on first use (kept open)."""

    def __init__(self, path: Path, num_units: int) -> None:
        self.path, self.num_units, self.handle = path, num_units, None

    def datasets(self) -> tuple[Any, Any, Any]:
        import h5py  # optional dependency (extra "events")

        if self.handle is None:
            try:
                self.handle = h5py.File(self.path, "r")
            except OSError as e:
                raise EventFormatError(None, f"not a readable HDF5 file ({e})", str(self.path)) from None
        return shd_datasets(self.handle, str(self.path))

    def __call__(self, i: int) -> np.ndarray:
        times, units, _ = self.datasets()
        return shd_sample_events(times[i], units[i], index=i, num_units=self.num_units, source=str(self.path))


def shd_source(root: str | Path, split: str = "train", *, name: str = "shd",
               window_us: int | None = None) -> EventSource:
    """SHD (``name="shd"``) or SSC (``"ssc"``): ``root/<name>_<split>.h5`` (700 channels, no polarity)."""
    if name not in ("shd", "ssc"):
        raise ValueError(f"name must be shd or ssc, got {name!r}")
    path = Path(root) / f"{name}_{_split(split)}.h5"
    if not path.is_file():
        raise FileNotFoundError(f"{name.upper()}: {path} not found (expected the official files {name}_train.h5 "
                                f"and {name}_test.h5 in {Path(root)})")
    reader = _H5Reader(path, SHD_UNITS)
    _, _, labels_ds = reader.datasets()
    labels = np.asarray(labels_ds[()])
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= CLASSES[name]):
        raise EventFormatError(None, f"dataset 'labels' must hold integers in [0, {CLASSES[name]})", str(path))
    groups: dict[str, np.ndarray] = {}
    f = reader.handle
    if f is not None and "extra/speaker" in f:
        speaker = np.asarray(f["extra/speaker"][()])
        if speaker.shape != labels.shape or not np.issubdtype(speaker.dtype, np.integer):
            raise EventFormatError(None, f"dataset 'extra/speaker' must hold one integer per sample "
                                   f"({labels.size}), got {speaker.dtype} {speaker.shape}", str(path))
        groups["speaker"] = speaker.astype(np.int64)
    window = DEFAULT_WINDOW_US[name] if window_us is None else int(window_us)
    return EventSource(name, (SHD_UNITS,), False, 1e-6, window, labels.astype(np.int64), CLASSES[name], reader,
                       groups, key=f"{name}:{path.resolve()}:{path.stat().st_size}")


# -- DVS Gesture -----------------------------------------------------------------------------------------------
_TRIAL = re.compile(r"^user(\d+)_(.+)$")


def _trial_groups(stem: str, where: str) -> tuple[int, str]:
    m = _TRIAL.match(stem)
    if m is None:
        raise EventFormatError(None, f"recording name {stem!r} is not 'userNN_<lighting>'", where)
    return int(m.group(1)), m.group(2)


class _AedatSegments:
    """Gesture ``i`` = the events of recording ``file[i]`` in ``[start[i], end[i])``, shifted to start at 0.
    The last recording read is cached (samples of one recording are consecutive)."""

    def __init__(self, files: list[Path], start: np.ndarray, end: np.ndarray) -> None:
        self.files, self.start, self.end = files, start, end
        self.cached: tuple[Path, np.ndarray] | None = None

    def __call__(self, i: int) -> np.ndarray:
        path = self.files[i]
        if self.cached is None or self.cached[0] != path:
            self.cached = (path, read_aedat31(path))
        ev = self.cached[1]
        lo, hi = np.searchsorted(ev["t"], [self.start[i], self.end[i]], side="left")
        out = ev[lo:hi].copy()
        out["t"] -= self.start[i]
        return out


def _read_tonic_npy(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != 4 or not np.issubdtype(arr.dtype, np.number):
        raise EventFormatError(None, f"expected a numeric [N, 4] array (x, y, p, t), got {arr.dtype} {arr.shape}",
                               str(path))
    if arr.shape[0] and not (np.isfinite(arr).all() and arr.min() >= 0):
        raise EventFormatError(None, "every x, y, p, t must be finite and >= 0", str(path))
    x, y, p = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64)
    height, width = DVS_GESTURE_SHAPE
    if arr.shape[0] and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise EventFormatError(None, f"coordinates outside the {width}x{height} sensor", str(path))
    t = np.rint(arr[:, 3].astype(np.float64) * 1000.0).astype(np.int64)
    ev = np.empty(arr.shape[0], dtype=EVENT_DTYPE)
    ev["t"], ev["addr"], ev["p"] = t - (t.min() if t.size else 0), y * width + x, p > 0
    return ev[np.argsort(ev["t"], kind="stable")]


def dvs_gesture_source(root: str | Path, split: str = "train", *, window_us: int | None = None) -> EventSource:
    """DVS Gesture's official split: the AEDAT 3.1 recordings listed in ``trials_to_<split>.txt`` (one sample per
    labelled gesture), or else tonic's ``ibmGesture<Train|Test>/userNN_<lighting>/<label>.npy`` layout."""
    base = Path(root)
    sp = _split(split)
    trials = base / f"trials_to_{sp}.txt"
    tonic_dir = base / ("ibmGestureTrain" if sp == "train" else "ibmGestureTest")
    window = DEFAULT_WINDOW_US["dvs_gesture"] if window_us is None else int(window_us)
    subjects: list[int] = []
    sessions: list[str] = []
    labels: list[int] = []
    reader: Callable[[int], np.ndarray]
    if trials.is_file():
        files: list[Path] = []
        starts: list[int] = []
        ends: list[int] = []
        for name in read_trial_list(trials):
            rec = base / name
            csv_path = base / f"{rec.stem}_labels.csv"
            for p in (rec, csv_path):
                if not p.is_file():
                    raise FileNotFoundError(f"DVS Gesture: {p} not found (listed in {trials.name}; expected "
                                            "<recording>.aedat and <recording>_labels.csv beside it)")
            subject, session = _trial_groups(rec.stem, str(trials))
            rows = read_gesture_labels(csv_path)
            for label, start, end in rows:
                files.append(rec)
                starts.append(int(start))
                ends.append(int(end))
                labels.append(int(label))
                subjects.append(subject)
                sessions.append(session)
        reader = _AedatSegments(files, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64))
        key = f"dvs_gesture:{trials.resolve()}:{len(files)}"
    elif tonic_dir.is_dir():
        paths: list[Path] = []
        for folder in sorted(d for d in tonic_dir.iterdir() if d.is_dir()):
            subject, session = _trial_groups(folder.name, str(folder))
            for f in sorted(folder.glob("*.npy"), key=lambda q: q.stem):
                if not f.stem.isdigit() or int(f.stem) >= DVS_GESTURE_CLASSES:
                    raise EventFormatError(None, f"file name {f.name!r} is not '<label 0..10>.npy'", str(folder))
                paths.append(f)
                labels.append(int(f.stem))
                subjects.append(subject)
                sessions.append(session)
        if not paths:
            raise FileNotFoundError(f"DVS Gesture: no userNN_<lighting>/<label>.npy files under {tonic_dir}")
        reader = lambda i: _read_tonic_npy(paths[i])  # noqa: E731
        key = f"dvs_gesture:{tonic_dir.resolve()}:{len(paths)}"
    else:
        raise FileNotFoundError(f"DVS Gesture: neither {trials} nor {tonic_dir} found (expected the official "
                                "DvsGesture folder: trials_to_train.txt, trials_to_test.txt, userNN_<lighting>.aedat"
                                " and userNN_<lighting>_labels.csv; or tonic's ibmGestureTrain/ibmGestureTest)")
    return EventSource("dvs_gesture", DVS_GESTURE_SHAPE, True, 1e-6, window, np.asarray(labels, dtype=np.int64),
                       DVS_GESTURE_CLASSES, reader,
                       {"subject": np.asarray(subjects, dtype=np.int64), "session": _codes(sessions)}, key)


# -- tonic objects ---------------------------------------------------------------------------------------------
def _tonic_events(raw: Any, shape: tuple[int, ...], where: str) -> np.ndarray:
    arr = np.asarray(raw)
    names = arr.dtype.names or ()
    if arr.ndim != 1 or not {"x", "t"} <= set(names):
        raise EventFormatError(None, f"expected a 1-D structured event array with fields x, (y), p, t, got "
                               f"{arr.dtype}", where)
    x = arr["x"].astype(np.int64)
    y = arr["y"].astype(np.int64) if len(shape) == 2 else np.zeros_like(x)
    width = shape[-1]
    height = shape[0] if len(shape) == 2 else 1
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise EventFormatError(None, f"event coordinates outside the sensor {shape}", where)
    ev = np.empty(arr.size, dtype=EVENT_DTYPE)
    ev["t"] = np.rint(arr["t"].astype(np.float64)).astype(np.int64)
    ev["addr"] = y * width + x
    ev["p"] = (arr["p"].astype(np.int64) > 0) if "p" in names else 1
    return ev[np.argsort(ev["t"], kind="stable")]


def tonic_source(dataset: Any, *, name: str = "tonic", num_classes: int | None = None,
                 window_us: int | None = None) -> EventSource:
    """A tonic dataset object (e.g. ``tonic.datasets.NMNIST(save_to, train=True)``, ``DVSGesture``, ``SHD``) as
    a source: ``sensor_size`` ``(W, H, P)`` gives the shape (``H == 1``: a 1-D address space, e.g. SHD's 700
    channels); events' ``t`` in microseconds. Labels come from ``dataset.targets`` when present (else one pass
    over the samples, which also finds the window when ``window_us`` is None); ``users``/``lighting`` (DVS
    Gesture) and ``speaker`` (SHD) become natural groups."""
    try:
        width, height, pols = (int(v) for v in dataset.sensor_size)
    except (AttributeError, TypeError, ValueError):
        raise ValueError("a tonic dataset needs sensor_size = (W, H, P)") from None
    shape: tuple[int, ...] = (width,) if height == 1 else (height, width)
    n = len(dataset)
    where = f"tonic {type(dataset).__name__}"
    targets = getattr(dataset, "targets", None)
    t_max = 0
    if targets is None or len(targets) != n or window_us is None:
        labels_list = []
        for i in range(n):
            raw, target = dataset[i]
            ev = _tonic_events(raw, shape, f"{where}[{i}]")
            t_max = max(t_max, int(ev["t"][-1]) if ev.size else 0)
            labels_list.append(int(target))
        labels = np.asarray(labels_list, dtype=np.int64)
    else:
        labels = np.asarray(targets, dtype=np.int64)
    groups: dict[str, np.ndarray] = {}
    if getattr(dataset, "users", None) is not None and len(dataset.users) == n:
        groups["subject"] = np.asarray(dataset.users, dtype=np.int64)
    if getattr(dataset, "lighting", None) is not None and len(dataset.lighting) == n:
        groups["session"] = _codes([str(v) for v in dataset.lighting])
    speaker = getattr(dataset, "speaker", None)
    if speaker is not None and len(speaker) == n:
        groups["speaker"] = np.asarray(speaker, dtype=np.int64)
    classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    window = t_max + 1 if window_us is None else int(window_us)
    return EventSource(name, shape, pols == 2, 1e-6, window, labels, classes,
                       lambda i: _tonic_events(dataset[i][0], shape, f"{where}[{i}]"), groups)


def open_source(name: str, root: str | Path, split: str, *, window_us: int | None = None) -> EventSource:
    """The official ``split`` of data set ``name`` (:data:`SOURCE_NAMES`) under ``root``."""
    if name == "nmnist":
        return nmnist_source(root, split, window_us=window_us)
    if name in ("shd", "ssc"):
        return shd_source(root, split, name=name, window_us=window_us)
    if name == "dvs_gesture":
        return dvs_gesture_source(root, split, window_us=window_us)
    raise ValueError(f"unknown event data set {name!r}; valid: {', '.join(SOURCE_NAMES)}")
