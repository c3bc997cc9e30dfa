"""Per-device random streams made cheaply (``fleet.core.rng``): ``ChunkSeeds`` computes the PCG64 state numpy's
``SeedSequence`` gives, so the chunks of ``DeviceDraws`` and the first child of a stream are the very draws
numpy would make, without building a ``SeedSequence`` and a ``PCG64`` for each."""

from __future__ import annotations

import random

import numpy as np
import pytest

from fleet.core.rng import ChunkSeeds, DeviceDraws, RngStreams

SEEDS = [0, 1, 2, 7, 2**32 - 1, 2**32, 2**40 + 3, 2**130 + 5]


def _numpy_state(seed: int, key: tuple) -> tuple[int, int]:
    state = np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)).state["state"]
    return state["state"], state["inc"]


@pytest.mark.parametrize("seed", SEEDS)
def test_chunk_seeds_give_numpys_pcg64_state(seed):
    rng = random.Random(seed % 1000)
    seeds = ChunkSeeds(seed)
    for _ in range(300):
        key = tuple(rng.choice([0, 1, 5, 2**32 + 1, rng.randrange(10**7)]) for _ in range(rng.choice([1, 2, 3])))
        keep = rng.choice([0, 1, 2, 3])
        assert seeds.pcg64_state(key, keep) == _numpy_state(seed, key), key


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_a_devices_chunks_are_numpys_draws_from_its_own_seed_sequence(kind):
    draws = DeviceDraws(3, 4, kind, 50)
    got = [draws.next(7) for _ in range(DeviceDraws.FIRST + 3 * DeviceDraws.CHUNK + 1)]
    gen = lambda key, shape: (np.random.Generator(np.random.PCG64(np.random.SeedSequence(3, spawn_key=key))))  # noqa: E731
    first = getattr(gen((4, 0), None), "standard_normal" if kind == "normal" else "random")((50, 8))[7].tolist()
    chunks = [getattr(gen((4, 8, k), None), "standard_normal" if kind == "normal" else "random")(32).tolist()
              for k in range(4)]
    assert got == (first + [x for c in chunks for x in c])[:len(got)]


def test_draws_are_drawn_only_when_a_device_draws():
    draws = RngStreams(1).device_draws("link", "uniform", 10_000_000)
    assert draws._first is None and draws._left == {}  # a fleet of ten million that never draws holds nothing
    draws.next(9_999_999)
    assert draws._first.shape == (10_000_000, DeviceDraws.FIRST)
    assert list(draws._left) == [9_999_999] and len(draws._left[9_999_999]) == DeviceDraws.FIRST - 1


@pytest.mark.parametrize("device", [0, 5, 999_999])
def test_the_first_child_state_is_the_streams_first_spawn(device):
    streams = RngStreams(11)
    child = RngStreams(11).stream("failure", device).spawn(1)[0]
    assert streams.first_child_state("failure", device) == child.bit_generator.state
