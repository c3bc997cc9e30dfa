"""Each algorithm's per-task resource demand on the `cnn` model.

The cnn's profile, from test_cost's rules: P = 20490 (conv 160 + conv 4640 + linear 15690), Pp = 20432,
F = 2063488 FLOPs per sample (all in conv/linear), F_bwd = 3901184 (2F less the first conv's input gradient,
225792), S = 131712 saved bytes per sample, X = 3136 input bytes (784 floats), max io = 100352 bytes (first
ReLU: 2 * 12544 floats), A_train = 166208 bytes (the second conv's backward: X + 87808 saved by then +
2 * (3136 + 6272) floats of gradients and oneDNN copies), A_inf = 103488 bytes (X + the first conv's output
twice, 2 * 12544 floats).
"""

import math

import pytest

from algorithms import cost
from algorithms.base import ResourceDemand, TaskConfig, UpdateShape
from algorithms.fedavg import FedAvg
from algorithms.zo import FedFPZO, ZerothOrder

P, PP, F, S, X, IO = 20490, 20432, 2063488, 131712, 3136, 100352
F_BWD, A_TRAIN, A_INF = 3901184, 166208, 103488
MASK = 2554  # ceil(20432 / 8)
FIXUPS = cost.ZO_FIXUP_BYTES  # one exact-restore fix-up: int64 index + float32 value


def test_cnn_profile_figures():
    profile = FedAvg().profile
    assert (profile.params, profile.prunable_params, profile.forward_flops_per_sample) == (P, PP, F)
    assert profile.saved_activation_bytes_per_sample == S
    assert profile.input_bytes_per_sample == X
    assert profile.max_io_bytes_per_sample == IO
    assert profile.backward_flops_per_sample == F_BWD
    assert profile.training_bytes_per_sample == A_TRAIN
    assert profile.inference_bytes_per_sample == A_INF


def test_profile_is_computed_once():
    algorithm = ZerothOrder()
    assert algorithm.profile is algorithm.profile


def test_fedavg_dense():
    algorithm = FedAvg()
    config = algorithm.task(0)
    assert config == TaskConfig("train", 10, 32)
    assert algorithm.demand(config) == ResourceDemand(
        peak_memory_bytes=5482576,  # P*4*2 = 163920, + 32 * A_TRAIN = 5318656
        flops=1908695040,  # 10 * 32 * (F + F_BWD)
        bytes_down=81960,  # P * 4
        bytes_up=81960,
    )


def test_fedavg_adam_adds_two_slots():
    demand = FedAvg(optimizer="adam").demand(TaskConfig("train", 10, 32))
    assert demand.peak_memory_bytes == 5646496  # P*4*4 = 327840, + 5318656


def test_fedavg_masked():
    # density 0.5: nnz = 10216, values (10216 + 58 biases) * 4 = 41096
    demand = FedAvg(density=0.5).demand(TaskConfig("train", 10, 32))
    assert demand == ResourceDemand(
        peak_memory_bytes=5485130,  # 163920 + MASK + 5318656 (dense_bitmap)
        flops=954347520,  # 10 * 32 * (round(0.5 * F) = 1031744 + round(0.5 * F_BWD) = 1950592)
        bytes_down=43650,  # 41096 + MASK
        bytes_up=41096,  # the server knows the mask
    )


def test_zo_dense():
    algorithm = ZerothOrder()
    assert algorithm.demand(algorithm.task(3)) == ResourceDemand(
        # P*4 = 81960, + 32 * A_INF = 3311616 (chunks: 13 * 4096 = 53248), + the exact-restore fix-ups
        peak_memory_bytes=3393576 + FIXUPS * math.ceil(algorithm.fixup_fraction * P),
        flops=26461822400,  # 10 * (2*20*32*F = 2641264640, + 20 * P * 12 = 4917600)
        bytes_down=81960,
        bytes_up=81960,
    )


def test_zo_seed_uplink():
    assert ZerothOrder(uplink="seeds").demand(TaskConfig("train", 10, 32)).bytes_up == 1600  # 8 * 20 * 10


def test_dense_fedavg_needs_more_memory_than_dense_zo():
    config = TaskConfig("train", 10, 32)
    assert FedAvg().demand(config).peak_memory_bytes > ZerothOrder().demand(config).peak_memory_bytes


def test_sparse_zo_needs_less_memory_than_dense_zo_when_stored_sparse():
    config = TaskConfig("train", 10, 32)
    dense = ZerothOrder().demand(config).peak_memory_bytes
    algorithm = ZerothOrder(density=0.1, sparse_format="csr")
    sparse = algorithm.demand(config).peak_memory_bytes
    # nnz 2043: 2043*8 + 58*4 = 16576, + 3311616, + the exact-restore fix-ups of D = 2101 coordinates
    assert sparse == 3328192 + cost.zo_fixup_bytes(algorithm.profile, 0.1, algorithm.fixup_fraction)
    assert sparse < dense
    # a bitmap-masked dense tensor saves nothing: it costs the mask on top
    fixups = algorithm.fixup_fraction
    assert ZerothOrder(density=0.1).demand(config).peak_memory_bytes == (
        dense + MASK - FIXUPS * math.ceil(fixups * P) + FIXUPS * math.ceil(fixups * 2101))


def test_fedfpzo_prunes_on_the_server_by_default():
    algorithm = FedFPZO()
    assert algorithm.task(0) == TaskConfig("train", 10, 32)
    assert algorithm.demand(algorithm.task(0)) == ResourceDemand(
        peak_memory_bytes=3328192 + FIXUPS * math.ceil(algorithm.fixup_fraction * 2101),  # csr, as above
        flops=2646309600,  # 10 * (2*20*32*206349 = 264126720, + 20 * 2101 * 12 = 504240)
        bytes_down=10958,  # (2043 + 58) * 4 = 8404, + MASK
        bytes_up=8404,
    )
    server = algorithm.server_demand()
    assert server == ResourceDemand(10190370, 381739008, 0, 0)  # as the client-side scoring below


def test_fedfpzo_prune_phase_on_clients_is_bp_level():
    algorithm = FedFPZO(prune_on="clients", prune_iters=2)
    assert [algorithm.task(r).phase for r in range(4)] == ["prune", "prune", "train", "train"]
    prune = algorithm.task(0)
    assert prune == TaskConfig("prune", 1, 32)
    demand = algorithm.demand(prune)
    assert demand == ResourceDemand(
        # 7*P*4 = 573720, + the largest prunable layer's slice of dm 15680*4 = 62720, + P bool mask,
        # + 32 * (S + A_TRAIN) = 9533440
        peak_memory_bytes=10190370,
        flops=381739008,  # 1 draw * 2 graphs * 32 * (F + F_BWD)
        bytes_down=MASK,
        bytes_up=81728,  # Pp * 4 scores
    )
    assert algorithm.server_demand() is None
    bp_peak = FedAvg().demand(TaskConfig("train", 10, 32)).peak_memory_bytes
    zo_peak = algorithm.demand(algorithm.task(2)).peak_memory_bytes
    assert demand.peak_memory_bytes > bp_peak > zo_peak


def test_demand_follows_the_config_batch_and_steps():
    algorithm = ZerothOrder()
    small = algorithm.demand(TaskConfig("train", 1, 1))
    fixups = FIXUPS * math.ceil(algorithm.fixup_fraction * P)
    assert small.peak_memory_bytes == 81960 + fixups + A_INF  # the forward (100352) beats one chunk
    assert small.flops == 2 * 20 * F + 20 * P * 12


@pytest.mark.parametrize("algorithm", [FedAvg(), ZerothOrder()])
def test_train_only_algorithms_refuse_a_prune_task(algorithm):
    with pytest.raises(ValueError, match="phase"):
        algorithm.demand(TaskConfig("prune", 1, 32))


@pytest.mark.parametrize("cls, kwargs, field", [
    (FedAvg, {"optimizer": "rmsprop"}, "optimizer"),
    (FedAvg, {"density": 0}, "density"),
    (FedAvg, {"batch_size": 0}, "batch_size"),
    (ZerothOrder, {"uplink": "gradients"}, "uplink"),
    (ZerothOrder, {"model": "vgg"}, "model"),
    (FedFPZO, {"prune_on": "edge"}, "prune_on"),
    (FedFPZO, {"prune_samples": 0}, "prune_samples"),
    (FedFPZO, {"prune_iters": -1}, "prune_iters"),
])
def test_bad_parameters_are_named(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_negative_round_is_refused():
    with pytest.raises(ValueError, match="round_index"):
        FedAvg().task(-1)


@pytest.mark.parametrize("algorithm, phase, shape", [
    (FedAvg(model="mlp_small", input_shape=(1, 8, 8)), "train", UpdateShape("delta")),
    (ZerothOrder(model="mlp_small", queries=3, uplink="seeds", input_shape=(1, 8, 8)), "train",
     UpdateShape("seeds", 2 * 3)),
    (ZerothOrder(model="mlp_small", queries=3, input_shape=(1, 8, 8)), "train", UpdateShape("delta")),
    (FedFPZO(model="mlp_small", prune_on="clients", uplink="seeds", input_shape=(1, 8, 8)), "prune",
     UpdateShape("scores")),
])
def test_update_shape_says_what_fit_returns(algorithm, phase, shape):
    """What the bridge checks a real device's update against: the kind, and the seed-pair count."""
    import torch

    from algorithms.local import ClientData

    config = TaskConfig(phase, 2, 8)
    assert algorithm.update_shape(config) == shape
    data = ClientData(torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,)))
    result = algorithm.fit(algorithm.init(0), config, data, 1)
    assert result.kind == shape.kind
    assert (0 if result.seeds is None else len(result.seeds)) == shape.seed_pairs


def test_fedfpzo_phase_follows_the_state_in_learning_mode_and_the_round_in_timing_mode():
    import torch

    from algorithms.local import ModelState

    algorithm = FedFPZO(prune_on="clients", prune_iters=2)
    unpruned, pruned = ModelState(torch.zeros(1), None, 0), ModelState(torch.zeros(1), None, 2)
    assert algorithm.task(5, unpruned).phase == "prune"  # a failed round did not advance the schedule
    assert algorithm.task(0, pruned).phase == "train"
    assert [algorithm.task(r).phase for r in (0, 1, 2)] == ["prune", "prune", "train"]
