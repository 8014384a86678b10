"""spikefed.seeding: one fixed word layout per purpose, so distinct streams never share a seed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spikefed.seeding import NO_ROUND, SERVER_STREAM, Purpose, derive_seed, numpy_rng, torch_generator


def _names(purpose: Purpose, rounds: range, clients: range, indices: range) -> list[tuple]:
    lay = purpose.layout
    rs: list[int | None] = [None, *rounds]
    cs: list[int | None] = [*clients, SERVER_STREAM] if lay.clients else [None]
    ix: list[int | None] = list(indices) if lay.indexed else [None]
    return [(purpose, r, c, i) for r, c, i in itertools.product(rs, cs, ix)]


def test_every_distinct_name_gives_a_distinct_seed() -> None:
    names = [n for p in Purpose for n in _names(p, range(0, 6), range(0, 6), range(0, 4))]
    seeds = {}
    for seed in (0, 1, 3):
        for p, r, c, i in names:
            seeds.setdefault(derive_seed(seed, p, r, c, i), []).append((seed, p, r, c, i))
    clashes = {k: v for k, v in seeds.items() if len(v) > 1}
    assert not clashes
    assert len(seeds) == 3 * len(names)


def test_the_padding_collision_of_the_old_layout_is_gone() -> None:
    # the old derive_seed(s, PARTITION=3) equalled derive_seed(s, 3, SAMPLE=0): numpy pads entropy with zeros
    old = lambda *p: int(np.random.SeedSequence(list(p)).generate_state(2, np.uint64)[0] >> 1)  # noqa: E731
    assert old(7, 3) == old(7, 3, 0)
    assert derive_seed(7, Purpose.PARTITION) != derive_seed(7, Purpose.SAMPLE, 3)
    assert derive_seed(7, Purpose.INIT) != derive_seed(7, Purpose.SAMPLE, 4)


def test_layout_is_the_documented_word_array() -> None:
    ref = lambda words: int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> 1)  # noqa: E731
    assert derive_seed(5, Purpose.CLIENT, 3, 9) == ref([5, 3, 1, 9])
    assert derive_seed(5, Purpose.SAMPLE, 3) == ref([5, 3, 0, 0])
    assert derive_seed(5, Purpose.PARTITION) == ref([5, NO_ROUND, 3, 0])
    assert derive_seed(5, Purpose.CONTINUAL_NOISE, None, 2, 4) == ref([5, NO_ROUND, 2002, 2, 4])


@pytest.mark.parametrize("kwargs, match", [
    ({"purpose": Purpose.CLIENT, "round": 1}, "one stream per client"),
    ({"purpose": Purpose.SAMPLE, "round": 1, "client": 0}, "no per-client streams"),
    ({"purpose": Purpose.CONTINUAL_EVAL, "round": 1}, "needs index"),
    ({"purpose": Purpose.SAMPLE, "round": 1, "index": 2}, "takes no index"),
    ({"purpose": Purpose.SAMPLE, "round": NO_ROUND}, "round must be in"),
    ({"purpose": Purpose.CLIENT, "round": 1, "client": -1}, "client must be in"),
    ({"purpose": 0, "round": 1}, "Purpose"),
])
def test_bad_names_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        derive_seed(0, **kwargs)


def test_seed_outside_32_bits_is_refused_not_wrapped() -> None:
    with pytest.raises(ValueError, match="seed must be in"):
        derive_seed(2**32, Purpose.SAMPLE, 1)
    with pytest.raises(TypeError):
        derive_seed(True, Purpose.SAMPLE, 1)


def test_generators_are_seeded_with_derive_seed() -> None:
    s = derive_seed(11, Purpose.COMPRESS, 2, SERVER_STREAM)
    a = torch_generator(11, Purpose.COMPRESS, 2, SERVER_STREAM).initial_seed()
    assert a == s
    assert numpy_rng(11, Purpose.FAULT, 1, 4).integers(1 << 30) == np.random.default_rng(
        derive_seed(11, Purpose.FAULT, 1, 4)).integers(1 << 30)


def test_purpose_values_are_unique() -> None:
    values = [int(p) for p in Purpose]
    assert len(values) == len(set(values))
