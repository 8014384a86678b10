"""Recorded data sets: each reader on small files written byte by byte in the official layout, tonic's layouts and
tonic dataset objects, streamed binning against a plain loop, sensor skew, natural partitions, the frame cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the byte-by-byte writers (importlib import mode)
from official_formats import (aedat_header, aedat_packet, write_gesture_csv,  # noqa: E402
                              write_nmnist_file, write_shd_file)

from spikefed.data.natural import group_partition
from spikefed.events.aer import EventBatch, EventFormatError
from spikefed.events.sensors import SensorSkew, apply_sensor, event_statistics, statistics_divergence
from spikefed.events.sources import (batch_source, dvs_gesture_source, nmnist_source, open_source, shd_source,
                                     tonic_source)
from spikefed.events.stream import FrameSpec, cached_frames, iter_frames, load_frames


# -- N-MNIST ---------------------------------------------------------------------------------------------------
def _nmnist_tree(root: Path) -> dict[str, list[tuple[int, list[tuple[int, int, int, int]]]]]:
    """Train: 2 samples of digit 3, 1 of digit 7; Test: 1 of digit 0. Events (x, y, p, t)."""
    samples = {
        "Train": [(3, [(0, 0, 1, 5), (33, 1, 0, 70_000), (5, 33, 1, 8_388_607)]),
                  (3, [(10, 20, 0, 100), (11, 21, 1, 99)]),
                  (7, [(2, 3, 1, 65_536 + 256 + 1)])],
        "Test": [(0, [(30, 30, 0, 1000)])],
    }
    for split, items in samples.items():
        for i, (label, ev) in enumerate(items):
            x, y, p, t = zip(*ev)
            write_nmnist_file(root / split / str(label) / f"{i:05d}.bin", x, y, p, t)
    return samples


def test_nmnist_source_reads_the_official_layout(tmp_path: Path) -> None:
    samples = _nmnist_tree(tmp_path)
    train, test = nmnist_source(tmp_path, "train"), nmnist_source(tmp_path, "test")
    assert len(train) == 3 and len(test) == 1 and train.shape == (34, 34) and train.polarity
    assert train.labels.tolist() == [3, 3, 7] and test.labels.tolist() == [0]
    for i, (_, ev) in enumerate(samples["Train"]):
        got = train.events(i)
        want = sorted(ev, key=lambda e: e[3])  # by time, stable
        assert got["t"].tolist() == [e[3] for e in want]
        assert got["addr"].tolist() == [e[1] * 34 + e[0] for e in want]
        assert got["p"].tolist() == [e[2] for e in want]


def test_nmnist_tonic_layout_and_missing_files(tmp_path: Path) -> None:
    _nmnist_tree(tmp_path / "NMNIST")
    assert len(nmnist_source(tmp_path, "train")) == 3
    with pytest.raises(FileNotFoundError, match=r"Train/<digit>/<id>\.bin.*official layout") as e:
        nmnist_source(tmp_path / "nowhere", "train")
    assert "\n" not in str(e.value) and str(tmp_path / "nowhere") in str(e.value)


def test_nmnist_bad_bytes_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "Train" / "1").mkdir(parents=True)
    bad = tmp_path / "Train" / "1" / "x.bin"
    bad.write_bytes(bytes([40, 0, 0, 0, 1]))  # x = 40 outside 34
    src = nmnist_source(tmp_path, "train")
    with pytest.raises(EventFormatError, match="x=40 outside"):
        src.events(0)


def test_tonic_nmnist_object_matches_own_reader(tmp_path: Path) -> None:
    tonic = pytest.importorskip("tonic")

    class NMNIST(tonic.datasets.NMNIST):  # tonic's reader on our files; skip its download check
        def _check_exists(self) -> bool:
            return True

    _nmnist_tree(tmp_path / "NMNIST")
    # tonic's folder names for the extracted archive
    (tmp_path / "NMNIST" / "Train").rename(tmp_path / "NMNIST" / NMNIST.train_folder)
    ds = NMNIST(str(tmp_path), train=True)
    src = tonic_source(ds, name="nmnist", num_classes=10, window_us=10_000_000)
    (tmp_path / "NMNIST" / NMNIST.train_folder).rename(tmp_path / "NMNIST" / "Train")
    own = nmnist_source(tmp_path, "train")
    assert src.shape == own.shape == (34, 34) and src.labels.tolist() == own.labels.tolist()
    for i in range(len(own)):
        a, b = src.events(i), own.events(i)
        assert sorted(zip(a["t"], a["addr"], a["p"])) == sorted(zip(b["t"], b["addr"], b["p"]))


# -- DVS Gesture -----------------------------------------------------------------------------------------------
def _gesture_tree(root: Path) -> None:
    """user01_fluorescent (train) with two gestures, user02_led (test) with one; a special-event packet and an
    invalid event that must be skipped; a timestamp overflow."""
    root.mkdir(parents=True, exist_ok=True)
    rec1 = aedat_header()
    rec1 += aedat_packet([(1, 2, 1, 100, 1), (127, 127, 0, 150, 1), (3, 3, 1, 160, 0)])  # last one invalid
    rec1 += aedat_packet([(0, 0, 0, 0, 1)], event_type=0)  # a special event: skipped
    rec1 += aedat_packet([(5, 6, 0, 10, 1)], overflow=1)  # t = 2**31 + 10
    (root / "user01_fluorescent.aedat").write_bytes(rec1)
    write_gesture_csv(root / "user01_fluorescent_labels.csv", [(1, 90, 200), (11, 2**31, 2**31 + 100)])
    (root / "user02_led.aedat").write_bytes(aedat_header() + aedat_packet([(64, 32, 1, 1000, 1)]))
    write_gesture_csv(root / "user02_led_labels.csv", [(4, 900, 2000)])
    (root / "trials_to_train.txt").write_text("user01_fluorescent.aedat\n")
    (root / "trials_to_test.txt").write_text("user02_led.aedat\n\n")


def test_dvs_gesture_reads_aedat31_segments_with_labels_and_groups(tmp_path: Path) -> None:
    _gesture_tree(tmp_path)
    train = open_source("dvs_gesture", tmp_path, "train")
    assert train.shape == (128, 128) and train.labels.tolist() == [0, 10]
    first = train.events(0)
    assert first["t"].tolist() == [10, 60] and first["addr"].tolist() == [2 * 128 + 1, 127 * 128 + 127]
    assert first["p"].tolist() == [1, 0]
    second = train.events(1)
    assert second["t"].tolist() == [10] and second["addr"].tolist() == [6 * 128 + 5]
    assert train.groups["subject"].tolist() == [1, 1]
    test = dvs_gesture_source(tmp_path, "test")
    assert test.labels.tolist() == [3] and test.groups["subject"].tolist() == [2]
    assert test.events(0)["t"].tolist() == [100]


def test_dvs_gesture_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="trials_to_train.txt"):
        dvs_gesture_source(tmp_path, "train")
    _gesture_tree(tmp_path)
    (tmp_path / "user02_led_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="user02_led_labels.csv"):
        dvs_gesture_source(tmp_path, "test")
    (tmp_path / "user01_fluorescent.aedat").write_bytes(aedat_header() + b"\x01\x00")
    src = dvs_gesture_source(tmp_path, "train")
    with pytest.raises(EventFormatError, match="truncated packet header"):
        src.events(0)
    write_gesture_csv(tmp_path / "user01_fluorescent_labels.csv", [(12, 0, 10)])
    with pytest.raises(EventFormatError, match="class 12 outside"):
        dvs_gesture_source(tmp_path, "train")


def test_dvs_gesture_tonic_layout_and_object(tmp_path: Path) -> None:
    folder = tmp_path / "ibmGestureTrain" / "user03_natural"
    folder.mkdir(parents=True)
    ev = np.array([[1, 2, 1, 0.5], [3, 4, 0, 0.25]], dtype=np.float64)  # x, y, p, t in ms
    np.save(folder / "5.npy", ev)
    src = dvs_gesture_source(tmp_path, "train")
    got = src.events(0)
    assert src.labels.tolist() == [5] and src.groups["subject"].tolist() == [3]
    assert got["t"].tolist() == [0, 250] and got["addr"].tolist() == [4 * 128 + 3, 2 * 128 + 1]
    tonic = pytest.importorskip("tonic")

    class DVSGesture(tonic.datasets.DVSGesture):
        def _check_exists(self) -> bool:
            return True

    (tmp_path / "ibmGestureTrain").rename(tmp_path / "DVSGesture_tmp")
    (tmp_path / "DVSGesture").mkdir()
    (tmp_path / "DVSGesture_tmp").rename(tmp_path / "DVSGesture" / "ibmGestureTrain")
    obj = tonic_source(DVSGesture(str(tmp_path), train=True), num_classes=11)
    assert obj.groups["subject"].tolist() == [3] and obj.labels.tolist() == [5]
    assert sorted(obj.events(0)["addr"].tolist()) == sorted(got["addr"].tolist())
    assert sorted(obj.events(0)["t"].tolist()) == [250, 500]  # tonic keeps the absolute times



@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 3)), "numeric \\[N, 4\\] array"),                       # wrong shape
    (np.array([[1, 2, 1, np.nan]]), "finite and >= 0"),                     # NaN timestamp
    (np.array([[1, 2, 1, np.inf]]), "finite and >= 0"),                     # infinite timestamp
    (np.array([[-1, 2, 1, 0.5]]), "finite and >= 0"),                       # negative coordinate
    (np.array([[128, 2, 1, 0.5]]), "outside the 128x128 sensor"),           # x beyond the sensor
    (np.array([["a", "b", "c", "d"]]), "numeric"),                          # strings
])
def test_dvs_gesture_tonic_npy_malformed_is_one_error(tmp_path: Path, bad: np.ndarray, message: str) -> None:
    folder = tmp_path / "ibmGestureTrain" / "user03_natural"
    folder.mkdir(parents=True)
    np.save(folder / "5.npy", bad)
    src = dvs_gesture_source(tmp_path, "train")
    with pytest.raises(EventFormatError, match=message):
        src.events(0)


def test_dvs_gesture_tonic_npy_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ibmGestureTrain" / "user03_natural"
    folder.mkdir(parents=True)
    np.save(folder / "5.npy", np.array([object(), 1], dtype=object), allow_pickle=True)
    src = dvs_gesture_source(tmp_path, "train")
    with pytest.raises(ValueError, match="allow_pickle"):  # numpy refuses; nothing is unpickled
        src.events(0)

# -- SHD / SSC -------------------------------------------------------------------------------------------------
def test_shd_source_reads_hdf5_with_speakers(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    times = [np.array([0.5, 0.001, 0.25]), np.array([]), np.array([0.999])]
    units = [np.array([699, 0, 10]), np.array([], dtype=np.int64), np.array([5])]
    write_shd_file(tmp_path / "shd_train.h5", times, units, [3, 19, 0], speakers=[4, 4, 9])
    write_shd_file(tmp_path / "shd_test.h5", times[:1], units[:1], [1])
    src = shd_source(tmp_path, "train")
    assert src.shape == (700,) and not src.polarity and src.labels.tolist() == [3, 19, 0]
    assert src.groups["speaker"].tolist() == [4, 4, 9]
    first = src.events(0)
    want_t = np.rint(np.array([0.001, 0.25, 0.5], dtype=np.float32).astype(np.float64) * 1e6).astype(int)
    assert first["t"].tolist() == want_t.tolist() and first["addr"].tolist() == [0, 10, 699]
    assert src.events(1).size == 0
    assert "speaker" not in shd_source(tmp_path, "test").groups
    with pytest.raises(FileNotFoundError, match="ssc_train.h5"):
        open_source("ssc", tmp_path, "train")


def test_tonic_shd_object(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    tonic = pytest.importorskip("tonic")

    class SHD(tonic.datasets.SHD):
        def _check_exists(self) -> bool:
            return True

    (tmp_path / "SHD").mkdir()
    write_shd_file(tmp_path / "SHD" / "shd_train.h5", [np.array([0.1, 0.2])], [np.array([7, 8])], [2],
                   speakers=[1])
    src = tonic_source(SHD(str(tmp_path), train=True), name="shd", num_classes=20)
    own = shd_source(tmp_path / "SHD", "train")
    assert src.shape == own.shape == (700,) and not src.polarity
    assert src.groups["speaker"].tolist() == [1] and src.labels.tolist() == [2]
    assert src.events(0)["addr"].tolist() == own.events(0)["addr"].tolist() == [7, 8]
    assert np.abs(src.events(0)["t"] - own.events(0)["t"]).max() <= 1


# -- streaming ---------------------------------------------------------------------------------------------------
def _random_batch(rng: np.random.Generator, n: int = 7, shape: tuple[int, ...] = (6, 5)) -> EventBatch:
    streams = []
    for _ in range(n):
        k = int(rng.integers(0, 40))
        ev = np.zeros(k, dtype=[("t", "<i8"), ("addr", "<u4"), ("p", "u1")])
        ev["t"] = np.sort(rng.integers(0, 1200, k))  # some beyond the 1000-tick window
        ev["addr"] = rng.integers(0, int(np.prod(shape)), k)
        ev["p"] = rng.integers(0, 2, k)
        streams.append(ev)
    return EventBatch.from_list(streams, shape, polarity=True, time_unit=1e-6, duration=1000)


def _frames_by_loop(batch: EventBatch, bins: int, down: int, crop: tuple[int, int, int, int]) -> np.ndarray:
    top, left, h, w = crop
    hh, ww = -(-h // down), -(-w // down)
    out = np.zeros((len(batch), bins, 2, hh, ww))
    for i in range(len(batch)):
        for t, a, p in batch[i].tolist():
            y, x = divmod(a, batch.shape[1])
            if t >= batch.duration or not (top <= y < top + h and left <= x < left + w):
                continue
            out[i, t * bins // batch.duration, 1 - p, (y - top) // down, (x - left) // down] += 1
    return out.reshape(len(batch), bins, -1)


def test_streamed_frames_match_a_plain_loop() -> None:
    batch = _random_batch(np.random.default_rng(1))
    src = batch_source(batch, np.arange(len(batch)) % 3, name="toy")
    spec = FrameSpec(bins=4, mode="count", downsample=2, crop=(1, 1, 5, 3))
    want = _frames_by_loop(batch, 4, 2, (1, 1, 5, 3))
    np.testing.assert_array_equal(load_frames(src, spec, block=3), want)
    got = np.concatenate([x for x, _ in iter_frames(src, spec, batch_size=2)])
    np.testing.assert_array_equal(got, want)
    binary = load_frames(src, FrameSpec(bins=4, mode="binary", downsample=2, crop=(1, 1, 5, 3)))
    np.testing.assert_array_equal(binary, np.minimum(want, 1))
    with pytest.raises(ValueError, match="does not fit the sensor"):
        load_frames(src, FrameSpec(crop=(0, 0, 7, 5)))


def test_frame_cache_is_written_once_and_equals_the_frames(tmp_path: Path) -> None:
    batch = _random_batch(np.random.default_rng(2))
    reads: list[int] = []
    base = batch_source(batch, np.zeros(len(batch), dtype=int), name="toy")
    src = type(base)(base.name, base.shape, base.polarity, base.time_unit, base.duration, base.labels, 1,
                     lambda i: (reads.append(i), batch[i])[1], {}, key="toy-files")
    spec = FrameSpec(bins=3, mode="count")
    first = cached_frames(src, spec, tmp_path)
    n_reads = len(reads)
    again = cached_frames(src, spec, tmp_path)
    assert len(reads) == n_reads == len(batch)  # the second call read nothing
    want = np.minimum(_frames_by_loop(batch, 3, 1, (0, 0, 6, 5)), 255)
    assert first.dtype == np.uint8
    np.testing.assert_array_equal(again, want)
    other = cached_frames(src, FrameSpec(bins=2, mode="count"), tmp_path)  # another key, another file
    assert other.shape[1] == 2 and len(list(tmp_path.glob("*.npy"))) == 2



@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape", "dtype"])
def test_a_damaged_frame_cache_is_one_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    batch = _random_batch(np.random.default_rng(3))
    base = batch_source(batch, np.zeros(len(batch), dtype=int), name="toy")
    src = type(base)(base.name, base.shape, base.polarity, base.time_unit, base.duration, base.labels, 1,
                     lambda i: batch[i], {}, key="toy-files")
    spec = FrameSpec(bins=3, mode="count")
    good = np.array(cached_frames(src, spec, tmp_path))
    (path,) = tmp_path.glob("*.npy")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:60])
    elif damage == "garbage":
        path.write_bytes(b"not an npy file at all")
    elif damage == "shape":
        np.save(path, good[:-1], allow_pickle=False)
    else:
        np.save(path, good.astype(np.float32), allow_pickle=False)
    with pytest.raises(ValueError, match=f"frame cache {path}.*delete it"):
        cached_frames(src, spec, tmp_path)

# -- sensor skew -------------------------------------------------------------------------------------------------
def _refractory_loop(ev: np.ndarray, ticks: int) -> list[tuple[int, int, int]]:
    last: dict[int, int] = {}
    kept = []
    for t, a, p in ev.tolist():
        if a in last and t - last[a] < ticks:
            last[a] = t
            continue
        last[a] = t
        kept.append((t, a, p))
    return kept


def test_sensor_refractory_and_pool_against_plain_loops() -> None:
    rng = np.random.default_rng(3)
    ev = _random_batch(rng, n=1, shape=(4, 4))[0]
    out = apply_sensor(ev, (4, 4), 1000, 1e-6, SensorSkew(refractory_us=100), np.random.default_rng(0))
    assert sorted(out.tolist()) == sorted(_refractory_loop(ev, 100))
    pooled = apply_sensor(ev, (4, 4), 1000, 1e-6, SensorSkew(pool=2), np.random.default_rng(0))
    assert sorted(pooled["addr"].tolist()) == sorted(((a // 4) // 2 * 2 * 4 + (a % 4) // 2 * 2)
                                                     for a in ev["addr"].tolist())
    same = apply_sensor(ev, (4, 4), 1000, 1e-6, SensorSkew(), np.random.default_rng(0))
    assert same.tolist() == ev.tolist()


def test_sensor_contrast_noise_and_hot_pixels_rates() -> None:
    ev = np.zeros(20_000, dtype=[("t", "<i8"), ("addr", "<u4"), ("p", "u1")])
    ev["t"] = np.arange(20_000) // 20
    ev["addr"] = np.arange(20_000) % 100
    rng = np.random.default_rng(4)
    thinned = apply_sensor(ev, (10, 10), 1_000_000, 1e-6, SensorSkew(contrast=2.5), rng)
    assert abs(thinned.size / ev.size - 1 / 2.5) < 0.02  # binomial sd ~0.0035
    empty = ev[:0]
    noisy = [apply_sensor(empty, (10, 10), 1_000_000, 1e-6, SensorSkew(noise_rate=3.0), rng).size
             for _ in range(200)]
    assert abs(np.mean(noisy) - 300) < 6  # Poisson(3 Hz x 100 pixels x 1 s); sd of the mean ~1.2
    hot = apply_sensor(empty, (10, 10), 500_000, 1e-6, SensorSkew(hot_pixels=3, hot_rate=1000.0), rng)
    assert np.unique(hot["addr"]).size == 3 and abs(hot.size - 1500) < 200  # 3 x Poisson(500)


def test_event_statistics_and_divergence() -> None:
    ev = np.array([(0, 1, 1), (10, 1, 0), (20, 2, 1)], dtype=[("t", "<i8"), ("addr", "<u4"), ("p", "u1")])
    batch = EventBatch.from_list([ev, ev[:0]], (3,), polarity=True, time_unit=1e-3, duration=30)
    s = event_statistics(batch)
    np.testing.assert_allclose(s[0], [np.log1p(3 / 0.03), 2 / 3, np.log1p(2), np.log1p(1.5)])
    np.testing.assert_allclose(s[1], [0, 0.5, 0, 0])
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, (200, 4)), rng.normal(0, 1, (200, 4))
    close = statistics_divergence(np.vstack([a, b]), [np.arange(200), np.arange(200, 400)])
    far = statistics_divergence(np.vstack([a, b + 3]), [np.arange(200), np.arange(200, 400)])
    assert close["mean_event_hellinger"] < 0.2 < 0.5 < far["mean_event_hellinger"]
    # 1-D reference: H^2 = 1 - exp(-dmu^2 / 8) for equal unit variances (client vs client, dmu = 3 per axis)
    assert far["max_pairwise_event_hellinger"] == pytest.approx(np.sqrt(1 - np.exp(-4 * 9 / 8)), abs=0.08)


# -- natural partitions --------------------------------------------------------------------------------------------
def test_group_partition_whole_groups() -> None:
    groups = np.array([5, 1, 5, 2, 2, 2, 9, 1, 5, 5])
    parts = group_partition(groups, 4)
    assert [p.tolist() for p in parts] == [[1, 7], [3, 4, 5], [0, 2, 8, 9], [6]]  # groups 1, 2, 5, 9
    # sizes 4 (group 5), 3 (2), 2 (1), 1 (9), largest first to the lighter client: 5 -> 0, 2 -> 1, 1 -> 1
    # (3 < 4), 9 -> 0 (4 < 5)
    two = group_partition(groups, 2)
    assert sorted(np.concatenate(two).tolist()) == list(range(10))
    assert [sorted(set(groups[p].tolist())) for p in two] == [[5, 9], [1, 2]]
    with pytest.raises(ValueError, match="exceeds the 4 groups"):
        group_partition(groups, 5)


# -- the run's data path -------------------------------------------------------------------------------------------
def test_run_data_official_split_limit_and_missing_root(tmp_path: Path) -> None:
    from spikefed.experiment.config import ConfigError, DataSettings
    from spikefed.experiment.eventdata import load_event_data

    samples = _nmnist_tree(tmp_path)
    ev = load_event_data(DataSettings(name="nmnist", root=str(tmp_path), bins=2, downsample=1, frame_mode="count",
                                      window_ms=10_000), seed=0)
    assert ev.split.y_train.tolist() == [3, 3, 7] and ev.split.y_test.tolist() == [0]  # the official split
    assert ev.split.x_train.shape == (3, 2, 2 * 34 * 34)
    # sample 0: (0,0,ON,t=5) bin 0; (33,1,OFF,70000) bin 0; (5,33,ON,8388607) bin 1 (window 10 s, 2 bins)
    x0 = ev.split.x_train[0].reshape(2, 2, 34, 34)
    assert x0[0, 0, 0, 0] == 1 and x0[0, 1, 1, 33] == 1 and x0[1, 0, 33, 5] == 1 and float(x0.sum()) == 3
    limited = load_event_data(DataSettings(name="nmnist", root=str(tmp_path), limit=2), seed=0)
    assert limited.split.y_train.tolist() == [3, 7]  # evenly spaced: the first and the last file
    assert len(samples["Train"]) == 3
    with pytest.raises(ConfigError, match=r"data\.root: N-MNIST: no Train"):
        load_event_data(DataSettings(name="nmnist", root=str(tmp_path / "none")), seed=0)
    with pytest.raises(ConfigError, match="data.crop"):
        load_event_data(DataSettings(name="nmnist", root=str(tmp_path), crop=[30, 30, 10, 10]), seed=0)


def test_tonic_objects_become_a_split_the_trainer_takes(tmp_path: Path) -> None:
    tonic = pytest.importorskip("tonic")
    from spikefed.events.stream import source_split

    class NMNIST(tonic.datasets.NMNIST):
        def _check_exists(self) -> bool:
            return True

    samples = _nmnist_tree(tmp_path / "NMNIST")
    (tmp_path / "NMNIST" / "Train").rename(tmp_path / "NMNIST" / NMNIST.train_folder)
    (tmp_path / "NMNIST" / "Test").rename(tmp_path / "NMNIST" / NMNIST.test_folder)
    train = tonic_source(NMNIST(str(tmp_path), train=True), num_classes=10, window_us=10_000_000)
    test = tonic_source(NMNIST(str(tmp_path), train=False), num_classes=10, window_us=10_000_000)
    split = source_split(train, test, FrameSpec(bins=2, mode="count"))
    assert split.sequence and split.x_train.shape == (3, 2, 2 * 34 * 34) and split.num_classes == 10
    total = sum(len(ev) for _, ev in samples["Train"])
    assert float(split.x_train.sum()) == total  # every event lands in a bin of the 10 s window


def test_synthetic_sets_through_the_source_path_equal_the_old_split() -> None:
    """The synthetic sets are one more source: same samples, same frames as split_events (the old dense path)."""
    import torch

    from spikefed.events.datasets import load_event_digits_split
    from spikefed.experiment.config import DataSettings
    from spikefed.experiment.eventdata import load_event_data

    old = load_event_digits_split(num_bins=3, seed=2, downsample=2)
    new = load_event_data(DataSettings(name="event_digits", bins=3, downsample=2), 2).split
    for part in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(old, part), getattr(new, part)), part


def test_event_domain_drift_adds_background_spikes_only_where_silent() -> None:
    import torch

    from spikefed.federated.continual import domain_transform

    g = torch.Generator().manual_seed(0)
    x = (torch.rand((200, 5, 40), generator=g) < 0.3).float()
    out = domain_transform(x, 2, 0.0, 0.05, torch.Generator().manual_seed(1))
    assert torch.equal(out[x == 1], x[x == 1])  # recorded spikes stay
    turned = float(out[x == 0].mean())  # silent cells that fire now: p = min(1, 2 * 0.05) = 0.1
    assert abs(turned - 0.1) < 0.01  # binomial sd over ~28,000 cells ~0.0018
    assert torch.equal(domain_transform(x, 0, 0.0, 0.05, None), x)
    with pytest.raises(ValueError, match="rotation=0"):
        domain_transform(x, 1, 30.0, 0.0, None)
