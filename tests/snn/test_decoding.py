from __future__ import annotations

import pytest
import torch

from spikefed.snn import decoding as dec


def train(per_sample: list[list[list[int]]]) -> torch.Tensor:
    """Build [T, B, C] from per_sample[b][c] = list of T spikes."""
    return torch.tensor(per_sample, dtype=torch.float32).permute(2, 0, 1).contiguous()


# T = 4, B = 2, C = 3
SPIKES = train(
    [
        [[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]],  # counts 2 1 0, first 1 0 4
        [[0, 0, 1, 1], [0, 0, 1, 0], [0, 1, 1, 1]],  # counts 2 1 3, first 2 2 1
    ]
)


def test_spike_count_and_first_spike_time_hand_values() -> None:
    assert SPIKES.shape == (4, 2, 3)
    assert dec.spike_count(SPIKES).tolist() == [[2, 1, 0], [2, 1, 3]]
    first = dec.first_spike_time(SPIKES)
    assert first.dtype == torch.float32
    assert first.tolist() == [[1, 0, 4], [2, 2, 1]]


def test_first_spike_time_matches_loop_on_random_trains() -> None:
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(9, 5, 6, generator=g) < 0.15).to(torch.int64)  # integer input works too
    first = dec.first_spike_time(s)
    assert first.dtype == torch.get_default_dtype()
    for b in range(5):
        for c in range(6):
            ref = next((t for t in range(9) if s[t, b, c] != 0), 9)
            assert first[b, c].item() == ref


def test_membrane_readouts() -> None:
    mem = torch.tensor([[[0.1, -1.0]], [[0.7, 0.2]], [[-0.3, 0.5]]])  # T=3, B=1, C=2
    assert torch.allclose(dec.membrane_max(mem), torch.tensor([[0.7, 0.5]]))
    assert torch.allclose(dec.membrane_last(mem), torch.tensor([[-0.3, 0.5]]))
    assert dec.predict("membrane_max", mem).tolist() == [0]
    assert dec.predict("membrane_last", mem).tolist() == [1]


def test_population_counts_and_spikes() -> None:
    counts = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 1.0, 0.0, 0.0, 7.0, 0.0]])
    assert dec.population(counts, 3, 2).tolist() == [[3, 7, 11], [1, 0, 7]]
    assert dec.population(counts, 2, 3).tolist() == [[6, 15], [1, 7]]
    g = torch.Generator().manual_seed(1)
    s = (torch.rand(5, 4, 6, generator=g) < 0.5).float()
    pop = dec.population(s, 3, 2)
    for b in range(4):
        for k in range(3):
            ref = sum(s[t, b, j].item() for t in range(5) for j in (2 * k, 2 * k + 1))
            assert pop[b, k].item() == ref


def test_predict_count_and_first_spike() -> None:
    assert dec.predict_count(SPIKES).tolist() == [0, 2]
    assert dec.predict_first_spike(SPIKES).tolist() == [1, 2]
    assert torch.equal(dec.predict("count", SPIKES), dec.predict_count(SPIKES))
    assert torch.equal(dec.predict("first_spike", SPIKES), dec.predict_first_spike(SPIKES))
    assert dec.predict_count(SPIKES).dtype == torch.int64


def test_predict_tie_breaking() -> None:
    s = train(
        [
            [[0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]],  # same first time; counts 1 2 2 -> class 1
            [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],  # silent -> class 0
            [[0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 1, 1]],  # earliest wins despite fewer spikes -> class 1
            [[0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]],  # t=0 for 1 and 2; count 2 vs 3 -> class 2
        ]
    )
    assert dec.predict_first_spike(s).tolist() == [1, 0, 1, 2]
    # count ties go to the lowest index
    assert dec.predict_count(s).tolist() == [1, 0, 0, 2]


def test_predict_ignores_nan() -> None:
    mem = torch.tensor([[[float("nan"), 0.1, 0.3]]])
    assert dec.predict("membrane_last", mem).tolist() == [2]


def test_errors_name_argument_and_shape() -> None:
    with pytest.raises(ValueError, match=r"expected spikes of shape \[T, B, classes\], got \(3, 4\)"):
        dec.spike_count(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"expected mem of shape"):
        dec.membrane_max(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"expected x of shape \[B, 6\].*got \(2, 5\)"):
        dec.population(torch.zeros(2, 5), 3, 2)
    with pytest.raises(ValueError, match="neurons_per_class"):
        dec.population(torch.zeros(2, 6), 3, 0)
    with pytest.raises(ValueError, match=r"unknown predictor kind 'vote'.*'count', 'first_spike'"):
        dec.predict("vote", SPIKES)
    with pytest.raises(ValueError, match=r"reduction 'mean'"):
        dec.predict_membrane(SPIKES, "mean")


def _count_then_first_spike_loop(spikes: torch.Tensor) -> list[int]:
    """Plain reference: the highest count; among those, the earliest first spike; then the lowest index."""
    steps, batch, classes = spikes.shape
    out = []
    for b in range(batch):
        counts = [sum(float(spikes[t, b, c]) for t in range(steps)) for c in range(classes)]
        firsts = [next((t for t in range(steps) if float(spikes[t, b, c]) != 0), steps) for c in range(classes)]
        out.append(min(range(classes), key=lambda c: (-counts[c], firsts[c], c)))
    return out


def test_count_ties_go_to_the_first_spike_against_a_loop() -> None:
    gen = torch.Generator().manual_seed(4)
    spikes = (torch.rand(3, 200, 5, generator=gen) < 0.3).float()  # 3 steps: ties for the top count are common
    lowest = dec.predict_count(spikes)
    first = dec.predict_count(spikes, ties="first_spike")
    assert first.tolist() == _count_then_first_spike_loop(spikes)
    assert (first != lowest).sum() > 10  # the rule decides many of these samples
    # hand case: classes 1 and 2 tie on two spikes, class 2 spiked first; class 0 never spiked
    s = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]).unsqueeze(1)  # [T=3, B=1, C=3]
    assert dec.predict_count(s).tolist() == [1] and dec.predict_count(s, "first_spike").tolist() == [2]
    assert dec.predict_count(torch.zeros(4, 2, 3), "first_spike").tolist() == [0, 0]  # no spikes: lowest index


def test_first_spike_prediction_against_a_loop() -> None:
    """The mirror rule: the earliest first spike; among those, the highest count; then the lowest index."""
    gen = torch.Generator().manual_seed(5)
    spikes = (torch.rand(4, 300, 6, generator=gen) < 0.25).float()
    steps, batch, classes = spikes.shape
    expected = []
    for b in range(batch):
        counts = [sum(float(spikes[t, b, c]) for t in range(steps)) for c in range(classes)]
        firsts = [next((t for t in range(steps) if float(spikes[t, b, c]) != 0), steps) for c in range(classes)]
        expected.append(min(range(classes), key=lambda c: (firsts[c], -counts[c], c)))
    assert dec.predict_first_spike(spikes).tolist() == expected
    earliest_lowest = [min(range(classes), key=lambda c: (next((t for t in range(steps)
                       if float(spikes[t, b, c]) != 0), steps), c)) for b in range(batch)]
    assert sum(e != x for e, x in zip(expected, earliest_lowest)) > 10  # the count decides many of these samples


def test_count_ties_bad_value_and_config_key() -> None:
    from spikefed.experiment.config import LocalTrainSettings
    from spikefed.snn.train import TrainConfig, predict

    with pytest.raises(ValueError, match="count tie-break 'random'"):
        dec.predict_count(SPIKES, ties="random")
    with pytest.raises(ValueError, match="count_ties 'random'"):
        TrainConfig(count_ties="random")
    s = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]).unsqueeze(1)
    cfg = LocalTrainSettings(count_ties="first_spike").to_train_config()
    assert predict(s, cfg).tolist() == [2] and predict(s, TrainConfig()).tolist() == [1]
