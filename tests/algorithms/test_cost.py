"""Cost models against a hand count and against what torch itself reports."""

import pytest
import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from algorithms import cost
from algorithms.models import MODELS, build_model
from algorithms.profiling import LayerCost, ModelProfile, profile_model

B = 8  # batch size of the hand count


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


TINY_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def tiny():
    return profile_model(tiny_cnn(), TINY_SHAPE)


def test_hand_count_per_layer(tiny):
    assert tiny.layers == (
        # conv: 4*1*3*3 = 36 weights + 4 bias; FLOPs 2 * Cin 1 * 3*3 * Cout 4 * 8*8 = 4608;
        # saves its input, which is the input batch (charged as input, not here); io 64 in + 256 out
        LayerCost("0", "Conv2d", 40, 36, 4608, 0, 0, 320),
        # ReLU saves its output 4*8*8 = 256; io 256 + 256
        LayerCost("1", "ReLU", 0, 0, 0, 256, 0, 512),
        # pool saves its input (the ReLU output, same storage: counted once, above) and int64 indices of
        # its 4*4*4 = 64 outputs: 64 * 8 = 512 bytes; io 256 + 64
        LayerCost("2", "MaxPool2d", 0, 0, 0, 0, 512, 320),
        # flatten: a view, saves nothing, allocates nothing: io 64 + 0
        LayerCost("3", "Flatten", 0, 0, 0, 0, 0, 64),
        # linear: 64*10 = 640 weights + 10 bias; FLOPs 2*64*10 = 1280; saves its input (the pool output
        # seen through the flatten view, first charged here): 64; io 64 + 10
        LayerCost("4", "Linear", 650, 640, 1280, 64, 0, 74),
    )


def test_hand_count_totals(tiny):
    assert tiny.params == 690  # 40 + 650
    assert tiny.prunable_params == 676  # 36 + 640
    assert tiny.forward_flops_per_sample == 5888  # 4608 + 1280
    assert tiny.input_bytes_per_sample == 256  # 64 * 4
    assert tiny.saved_activation_bytes_per_sample == 1792  # (256 + 64) * 4 + 512
    assert tiny.max_io_bytes_per_sample == 2048  # ReLU: 512 * 4


def test_hand_count_memory(tiny):
    # activations for every BP figure: B * (S + X) = 8 * (1792 + 256) = 16384
    assert cost.bp_peak_memory_bytes(tiny, B) == 21904  # 690*4*2 = 5520, + 16384
    assert cost.bp_peak_memory_bytes(tiny, B, "momentum") == 24664  # 690*4*3 = 8280, + 16384
    assert cost.bp_peak_memory_bytes(tiny, B, "adam") == 27424  # 690*4*4 = 11040, + 16384
    # density 0.25: nnz = round(0.25 * 676) = 169 kept weights, 690 - 676 = 14 biases
    # dense_bitmap: 2 * 690*4 + ceil(676/8) = 5520 + 85 = 5605, + 16384
    assert cost.bp_peak_memory_bytes(tiny, B, density=0.25) == 21989
    # csr: 2 copies of values (169 + 14)*4 = 732, + one index 169*4 = 676: 2140, + 16384
    assert cost.bp_peak_memory_bytes(tiny, B, density=0.25, sparse_format="csr") == 18524
    # ZO: weights once + B * max_io = 8 * 2048 = 16384
    assert cost.zo_peak_memory_bytes(tiny, B) == 19144  # 2760 + 16384
    assert cost.zo_peak_memory_bytes(tiny, B, 0.25) == 19229  # 2760 + 85 + 16384
    assert cost.zo_peak_memory_bytes(tiny, B, 0.25, "csr") == 17792  # 169*8 + 14*4 = 1408, + 16384
    # NTK: (2*690 + 4*676)*4 = 16336, + 8 * (2*1792 + 256) = 30720
    assert cost.ntk_scoring_memory_bytes(tiny, B) == 47056


def test_hand_count_flops(tiny):
    assert cost.bp_step_flops(tiny, B) == 141312  # 3 * 8 * 5888
    assert cost.sparse_forward_flops_per_sample(tiny, 0.25) == 1472  # round(0.25 * 5888), all prunable
    assert cost.bp_step_flops(tiny, B, 0.25) == 35328  # 3 * 8 * 1472
    # ZO, q = 2: forwards 2*2*8*5888 = 188416; passes 2 * 690 * 4 * (2 + 1) = 16560
    assert cost.zo_step_flops(tiny, B, 2) == 204976
    # density 0.25: 2*2*8*1472 = 47104; D = 169 + 14 = 183: 2 * 183 * 12 = 4392
    assert cost.zo_trainable_params(tiny, 0.25) == 183
    assert cost.zo_step_flops(tiny, B, 2, 0.25) == 51496
    assert cost.ntk_scoring_flops(tiny, B, samples=2) == 565248  # 2 * 6 * 8 * 5888


def test_hand_count_payloads(tiny):
    assert cost.dense_payload_bytes(tiny) == 2760  # 690 * 4
    assert cost.mask_bytes(tiny) == 85  # ceil(676 / 8)
    assert cost.sparse_values_bytes(tiny) == 2760  # density 1: everything
    assert cost.sparse_values_bytes(tiny, 0.25) == 732  # (169 + 14) * 4
    assert cost.model_payload_bytes(tiny) == 2760
    assert cost.model_payload_bytes(tiny, 0.25) == 817  # 732 + 85
    assert cost.score_payload_bytes(tiny) == 2704  # 676 * 4
    assert cost.seed_pairs_bytes(20, 10) == 1600  # 8 * 20 * 10


def test_bytes_per_element_scales_floats_not_indices():
    half = profile_model(tiny_cnn(), TINY_SHAPE, bytes_per_element=2)
    assert half.saved_activation_bytes_per_sample == 1152  # (256 + 64) * 2 + 512 int64 index bytes
    assert cost.dense_payload_bytes(half) == 1380


def _flop_counter_total(model: nn.Module, input_shape) -> int:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_flops_equal_torch_flop_counter(name):
    model, input_shape = build_model(name)
    assert profile_model(model, input_shape).forward_flops_per_sample == _flop_counter_total(model, input_shape)


def test_tiny_flops_equal_torch_flop_counter(tiny):
    assert tiny.forward_flops_per_sample == _flop_counter_total(tiny_cnn(), TINY_SHAPE)


def _saved_bytes(model: nn.Module, x: torch.Tensor, exclude=()) -> int:
    """Bytes of the distinct storages autograd saves for backward, parameters (and ``exclude``) left out."""
    skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *exclude)}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
    del out
    return sum(storages.values())


@pytest.mark.parametrize("name", ["tiny", *sorted(MODELS)])
def test_saved_activations_match_saved_tensors_hooks(name):
    model, shape = (tiny_cnn(), TINY_SHAPE) if name == "tiny" else build_model(name)
    profile = profile_model(model, shape)
    batch = 3
    measured = _saved_bytes(model, torch.zeros(batch, *shape))
    # every model here starts with a layer that saves its input, the batch: charged once, as input
    assert measured == batch * (profile.saved_activation_bytes_per_sample + profile.input_bytes_per_sample)


def test_frozen_first_layer_saves_nothing_before_the_first_trainable_layer():
    model = tiny_cnn()
    model[0].requires_grad_(False)
    profile = profile_model(model, TINY_SHAPE)
    # nothing requires grad until the Linear, which saves its input (64 floats) only
    assert profile.saved_activation_bytes_per_sample == 256
    assert _saved_bytes(model, torch.zeros(3, *TINY_SHAPE)) == 3 * 256


@pytest.mark.parametrize("name", ["tiny", "cnn"])
def test_ntk_scoring_memory_matches_a_real_scoring_pass(name):
    """Build the NTK-SAP score graph as the learning plane will and count what it keeps alive."""
    model, shape = (tiny_cnn(), TINY_SHAPE) if name == "tiny" else build_model(name)
    profile = profile_model(model, shape)
    batch = 3
    model.requires_grad_(False)
    theta = dict(model.named_parameters())
    masks = {n: torch.ones_like(t, requires_grad=True) for n, t in theta.items() if n.endswith("weight")}
    perturbed = {n: t + 0.01 * torch.randn_like(t) for n, t in theta.items()}
    x = torch.randn(batch, *shape)

    def masked(weights):
        return {n: weights[n] * masks[n] if n in masks else weights[n] for n in weights}

    resident = [*theta.values(), *perturbed.values(), *masks.values()]
    with_hooks = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        with_hooks[storage.data_ptr()] = storage.nbytes()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        difference = functional_call(model, masked(theta), (x,)) - functional_call(model, masked(perturbed), (x,))
        score_loss = (difference ** 2).sum()
    for tensor in resident:
        with_hooks[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    mask_gradients = sum(m.numel() for m in masks.values()) * 4  # allocated by backward
    measured = sum(with_hooks.values()) + mask_gradients
    loss_difference_bytes = batch * 10 * 4  # pow saves the (B, 10) logit difference: not charged
    assert measured - loss_difference_bytes == cost.ntk_scoring_memory_bytes(profile, batch)
    score_loss.backward()
    assert all(m.grad is not None for m in masks.values())


def test_unsupported_layer_is_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="BatchNorm2d"):
        profile_model(model, (1, 8, 8))


def test_bad_input_shape_is_named():
    with pytest.raises(ValueError, match="input_shape"):
        profile_model(tiny_cnn(), (1, 0, 8))


@pytest.mark.parametrize("call, field", [
    (lambda p: cost.bp_peak_memory_bytes(p, 0), "batch_size"),
    (lambda p: cost.bp_peak_memory_bytes(p, 1, "rmsprop"), "optimizer"),
    (lambda p: cost.bp_peak_memory_bytes(p, 1, density=0.0), "density"),
    (lambda p: cost.zo_peak_memory_bytes(p, 1, density=1.5), "density"),
    (lambda p: cost.zo_peak_memory_bytes(p, 1, 0.5, "coo"), "sparse_format"),
    (lambda p: cost.zo_step_flops(p, 1, 0), "queries"),
    (lambda p: cost.seed_pairs_bytes(1, 0), "steps"),
    (lambda p: cost.dense_payload_bytes("cnn"), "profile"),
])
def test_bad_arguments_raise_value_error_naming_the_field(tiny, call, field):
    with pytest.raises(ValueError, match=field):
        call(tiny)


def test_profile_records_are_validated():
    with pytest.raises(ValueError, match="forward_flops"):
        LayerCost("0", "Linear", 1, 1, -1, 0, 0, 0)
    with pytest.raises(ValueError, match="bytes_per_element"):
        ModelProfile((), (1,), 0)
