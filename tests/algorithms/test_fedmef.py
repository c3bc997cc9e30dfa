"""FedMef: the round schedule, update shapes, aggregation with prune-and-grow, the demand by hand, and the
cost model against torch's allocator (within 10 %) and flop counter (conv/linear FLOPs exactly) for every
round kind on mlp_small and cnn at batch 8 and 32, SAP on and off (table: docs/fedmef.md)."""

from functools import cache

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from algorithms.base import ResourceDemand, TaskConfig, UpdateShape
from algorithms.cost_fedmef import BAE_FLOPS_PER_MARKED
from algorithms.fedmef import FedMef
from algorithms.local import ClientData, ModelState
from algorithms.memory_probe import measure_peak
from algorithms.registry import PARAMETERS, create_algorithm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DIGITS = (1, 8, 8)


def _data(n, shape=DIGITS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClientData(torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_the_constructor_takes_the_registry_parameters():
    algorithm = create_algorithm("fedmef", model="mlp_small", input_shape=DIGITS)
    assert isinstance(algorithm, FedMef)
    assert algorithm.sap_gamma == 0.5 and algorithm.bae == "on" and algorithm.layer_density == "erk"
    assert set(PARAMETERS["fedmef"]) == {"model", "batch_size", "local_steps", "optimizer", "lr", "local_epochs",
                                         "epoch", "density", "layer_density", "adjust_every", "adjust_until",
                                         "adjust_alpha", "grad_upload", "bae", "bae_lambda", "bae_norm",
                                         "bae_penalty", "bae_rounds", "sap_gamma", "sap_index"}
    with pytest.raises(ValueError, match="sap_gamma"):
        FedMef(sap_gamma=1.0)


def test_round_kinds_follow_the_schedule():
    algorithm = FedMef(model="mlp_small", adjust_every=3, adjust_until=9, input_shape=DIGITS)
    modes = [algorithm.task(r).mode for r in range(13)]
    assert modes == ["mask", "plain", "plain", "adjust", "mask", "plain", "adjust", "mask", "plain", "adjust",
                     "mask", "plain", "plain"]
    state = algorithm.init(0)
    assert algorithm.task(7, ModelState(state.weights, state.mask, 3)).mode == "adjust"  # t = prune_step
    assert algorithm.task(0) == TaskConfig("train", 10, 32, mode="mask")


def test_fit_config_keeps_the_round_kind_and_update_shapes_follow_it():
    algorithm = FedMef(model="mlp_small", local_epochs=1.0, input_shape=DIGITS)
    fitted = algorithm.fit_config(TaskConfig("train", 10, 32, mode="adjust"), 20)
    assert fitted == TaskConfig("train", 1, 20, mode="adjust")
    assert algorithm.update_shape(fitted) == UpdateShape("delta_grad")
    assert algorithm.update_shape(TaskConfig("train", 1, 20, mode="plain")) == UpdateShape("delta")


def test_rounds_train_and_adjust_the_mask_at_constant_layer_density():
    algorithm = FedMef(model="mlp_small", adjust_every=2, adjust_until=10, lr=0.1, sap_gamma=0.0,
                       input_shape=DIGITS)
    state = algorithm.init(0)
    spans = [(o, s) for o, s, p in zip(algorithm.functional_model.layout.offsets,
                                        algorithm.functional_model.layout.shapes,
                                        algorithm.functional_model.layout.prunable) if p]
    kept = algorithm.kept_per_tensor()
    assert [int(state.mask[o:o + s[0] * s[1]].sum()) for o, s in spans] == kept == [300, 173]
    datas = [_data(30, seed=k) for k in range(3)]
    for t in range(3):
        config = algorithm.task(t, state)
        results = [algorithm.fit(state, config, d, k) for k, d in enumerate(datas)]
        assert all(r.kind == algorithm.update_shape(config).kind for r in results)
        new = algorithm.aggregate(state, results, [1.0] * 3)
        assert new.prune_step == t + 1
        changed = int((new.mask != state.mask).sum())
        if config.mode == "adjust":  # k = int(f_decay(2) * N) per tensor swapped (some regrown in place)
            swapped = [int(algorithm.swap_fraction(2) * n) for n in kept]
            assert 0 < changed <= 2 * sum(swapped)
            assert results[0].gradient[~algorithm.functional_model.layout.prunable_mask].eq(0).all()
            assert int((results[0].gradient != 0).sum()) <= sum(swapped)  # top-k among inactive
        else:
            assert changed == 0
        assert [int(new.mask[o:o + s[0] * s[1]].sum()) for o, s in spans] == kept
        assert not bool(new.weights[~new.mask].any())  # inactive (and regrown) weights are 0
        state = new


def test_demand_by_hand_on_digits():
    """mlp_small on 8x8: P = 4810, Pp = 4736 (4096 + 640), ERK keeps 300 + 173 = 473 at density 0.1; f_decay(10)
    at alpha 0.2 and T_end 100 is 0.1 * (1 + cos(pi / 10)) = 0.19511, so K = int(58.5) + int(33.8) = 91."""
    algorithm = FedMef(model="mlp_small", sap_gamma=0.0, input_shape=DIGITS)
    p, a_train, f_step = 4810, algorithm.profile.training_bytes_per_sample, 32 * (
        algorithm.profile.forward_flops_per_sample + algorithm.profile.backward_flops_per_sample)
    values = (473 + 74) * 4
    plain = 2 * p * 4 + p + max(32 * a_train, 4096 * 4)
    assert algorithm.demand(TaskConfig("train", 10, 32, mode="plain")) == ResourceDemand(
        plain, 10 * f_step, values, values)
    assert algorithm.demand(TaskConfig("train", 10, 32, mode="mask")) == ResourceDemand(
        plain, 10 * f_step, values + 592, values)  # the 1-bit mask: 4736 / 8
    adjust = algorithm.demand(TaskConfig("train", 10, 32, mode="adjust"))
    assert adjust.bytes_up == values + 91 * 8  # top-k: a float and an int32 index each
    assert adjust.flops == 11 * f_step + 10 * BAE_FLOPS_PER_MARKED * 91
    assert adjust.peak_memory_bytes == p * 4 + p + max(p * 4 + max(32 * a_train, 4096 * 4) + 91 * 12,
                                                       p * 4 + max(p * 4 + 32 * a_train, 4096 * 4 + 91 * 16))
    dense = FedMef(model="mlp_small", sap_gamma=0.0, grad_upload="dense", input_shape=DIGITS)
    assert dense.demand(TaskConfig("train", 10, 32, mode="adjust")).bytes_up == values + 4736 * 4


# ----------------------------------------------------------------------- against the allocator and counter

MODELS, BATCHES, GAMMAS, STEPS = ("mlp_small", "cnn"), (8, 32), (0.0, 0.5), 2
MODE_ROUND = {"mask": 0, "plain": 1, "adjust": 10}  # adjust at t = adjust_every: the demand's own bound


@cache
def _setup(name: str, gamma: float):
    algorithm = FedMef(model=name, sap_gamma=gamma)
    state = algorithm.init(0)
    return algorithm, state, _data(200, algorithm.functional_model.input_shape)


def _task(name, gamma, batch, mode):
    algorithm, state, data = _setup(name, gamma)
    config = TaskConfig("train", STEPS, batch, mode=mode)
    state = ModelState(state.weights, state.mask, MODE_ROUND[mode])
    return algorithm, config, (lambda: algorithm.fit(state, config, data, 1))


@cache
def memory_row(name: str, gamma: float, batch: int, mode: str) -> tuple[int, int]:
    """(modelled, measured) peak bytes; the measurement adds the bool mask the update reads in place."""
    algorithm, config, fn = _task(name, gamma, batch, mode)
    torch.set_num_threads(1)
    measured = measure_peak(fn).peak_bytes + algorithm.functional_model.size
    return algorithm.demand(config).peak_memory_bytes, measured


@pytest.mark.parametrize("name, gamma, batch, mode", [
    pytest.param(n, g, b, m, id=f"{n}-sap{g}-B{b}-{m}")
    for n in MODELS for g in GAMMAS for b in BATCHES for m in MODE_ROUND] + [
    pytest.param("mlp_small", 0.5, 64, m, id=f"mlp_small-sap0.5-B64-{m}") for m in MODE_ROUND])  # SAP's forward
def test_peak_memory_within_ten_percent(name, gamma, batch, mode):
    modelled, measured = memory_row(name, gamma, batch, mode)
    assert abs(modelled - measured) / measured <= 0.10, (modelled, measured)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("name", MODELS)
def test_flops_match_the_flop_counter(name, gamma):
    """The counter sees the conv/linear FLOPs: all of the demand but BaE's elementwise work; SAP's backward
    runs the dense kernels on the rebuilt input, so it counts what plain BP counts."""
    for mode in ("plain", "adjust"):
        algorithm, config, fn = _task(name, gamma, 32, mode)
        with FlopCounterMode(display=False) as counter:
            fn()
        marked = sum(int(algorithm.swap_fraction(10) * n) for n in algorithm.kept_per_tensor())
        bae = STEPS * BAE_FLOPS_PER_MARKED * marked if mode == "adjust" else 0
        assert counter.get_total_flops() == algorithm.demand(config).flops - bae
