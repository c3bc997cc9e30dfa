"""Each algorithm's per-task resource demand on the `cnn` model.

The cnn's profile, from test_cost's rules: P = 20490 (conv 160 + conv 4640 + linear 15690), Pp = 20432,
F = 2063488 FLOPs per sample (all in conv/linear), S = 131712 saved bytes per sample, X = 3136 input bytes
(784 floats), max io = 100352 bytes (first ReLU: 2 * 12544 floats).
"""

import pytest

from algorithms.base import ResourceDemand, TaskConfig
from algorithms.fedavg import FedAvg
from algorithms.zo import FedFPZO, ZerothOrder

P, PP, F, S, X, IO = 20490, 20432, 2063488, 131712, 3136, 100352
MASK = 2554  # ceil(20432 / 8)


def test_cnn_profile_figures():
    profile = FedAvg().profile
    assert (profile.params, profile.prunable_params, profile.forward_flops_per_sample) == (P, PP, F)
    assert profile.saved_activation_bytes_per_sample == S
    assert profile.input_bytes_per_sample == X
    assert profile.max_io_bytes_per_sample == IO


def test_profile_is_computed_once():
    algorithm = ZerothOrder()
    assert algorithm.profile is algorithm.profile


def test_fedavg_dense():
    algorithm = FedAvg()
    config = algorithm.configure_task(0)
    assert config == TaskConfig("train", 10, 32)
    assert algorithm.demand(config) == ResourceDemand(
        peak_memory_bytes=4479056,  # P*4*2 = 163920, + 32 * (S + X) = 4315136
        flops=1980948480,  # 10 * 3 * 32 * F
        bytes_down=81960,  # P * 4
        bytes_up=81960,
    )


def test_fedavg_adam_adds_two_slots():
    demand = FedAvg(optimizer="adam").demand(TaskConfig("train", 10, 32))
    assert demand.peak_memory_bytes == 4642976  # P*4*4 = 327840, + 4315136


def test_fedavg_masked():
    # density 0.5: nnz = 10216, values (10216 + 58 biases) * 4 = 41096
    demand = FedAvg(density=0.5).demand(TaskConfig("train", 10, 32))
    assert demand == ResourceDemand(
        peak_memory_bytes=4481610,  # 163920 + MASK + 4315136 (dense_bitmap)
        flops=990474240,  # 10 * 3 * 32 * round(0.5 * F) = 1031744
        bytes_down=43650,  # 41096 + MASK
        bytes_up=41096,  # the server knows the mask
    )


def test_zo_dense():
    algorithm = ZerothOrder()
    assert algorithm.demand(algorithm.configure_task(3)) == ResourceDemand(
        peak_memory_bytes=3293224,  # P*4 = 81960, + 32 * IO = 3211264
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
    sparse = ZerothOrder(density=0.1, sparse_format="csr").demand(config).peak_memory_bytes
    assert sparse == 3227840  # nnz 2043: 2043*8 + 58*4 = 16576, + 3211264
    assert sparse < dense
    # a bitmap-masked dense tensor saves nothing: it costs the mask on top
    assert ZerothOrder(density=0.1).demand(config).peak_memory_bytes == dense + MASK


def test_fedfpzo_prunes_on_the_server_by_default():
    algorithm = FedFPZO()
    assert algorithm.configure_task(0) == TaskConfig("train", 10, 32)
    assert algorithm.demand(algorithm.configure_task(0)) == ResourceDemand(
        peak_memory_bytes=3227840,  # csr at density 0.1, as above
        flops=2646309600,  # 10 * (2*20*32*206349 = 264126720, + 20 * 2101 * 12 = 504240)
        bytes_down=10958,  # (2043 + 58) * 4 = 8404, + MASK
        bytes_up=8404,
    )
    server = algorithm.server_prune_demand()
    assert server == ResourceDemand(9020752, 396189696, 0, 0)


def test_fedfpzo_prune_phase_on_clients_is_bp_level():
    algorithm = FedFPZO(prune_on="clients", prune_iters=2)
    assert [algorithm.configure_task(r).phase for r in range(4)] == ["prune", "prune", "train", "train"]
    prune = algorithm.configure_task(0)
    assert prune == TaskConfig("prune", 1, 32)
    demand = algorithm.demand(prune)
    assert demand == ResourceDemand(
        peak_memory_bytes=9020752,  # (2P + 4Pp)*4 = 490832, + 32 * (2S + X) = 8529920
        flops=396189696,  # 1 draw * 6 * 32 * F
        bytes_down=MASK,
        bytes_up=81728,  # Pp * 4 scores
    )
    assert algorithm.server_prune_demand() is None
    bp_peak = FedAvg().demand(TaskConfig("train", 10, 32)).peak_memory_bytes
    zo_peak = algorithm.demand(algorithm.configure_task(2)).peak_memory_bytes
    assert demand.peak_memory_bytes > bp_peak > zo_peak


def test_demand_follows_the_config_batch_and_steps():
    algorithm = ZerothOrder()
    small = algorithm.demand(TaskConfig("train", 1, 1))
    assert small.peak_memory_bytes == 81960 + IO
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
        FedAvg().configure_task(-1)
