"""Cost models against a hand count and against what torch itself reports."""

import pytest
import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from algorithms import cost
from algorithms.local import ZO_CHUNK
from algorithms.models import MODELS, build_model
from algorithms.params import ParamLayout, flatten_parameters
from algorithms.profiling import LayerCost, ModelProfile, profile_model, profile_named_model

B = 8  # batch size of the hand count


def tiny_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))


TINY_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def tiny():
    return profile_model(tiny_cnn(), TINY_SHAPE)


def test_hand_count_per_layer(tiny):
    # the last four fields: backward FLOPs, forward working-set elements, forward int64 bytes, backward
    # working-set elements (rules in profiling's docstring)
    assert tiny.layers == (
        # conv: 4*1*3*3 = 36 weights + 4 bias; FLOPs 2 * Cin 1 * 3*3 * Cout 4 * 8*8 = 4608;
        # saves its input, which is the input batch (charged as input, not here); io 64 in + 256 out.
        # backward: weight gradient only (the input needs none): 4608 FLOPs. oneDNN's blocked copies pad
        # channels to 8: the output's 4 and the input's 1 both become 8*8*8 = 512. forward: the input is the
        # batch (not counted), out 256 + oneDNN's copy max(512, 512) = 768. backward: grad out 256 + its
        # blocked copy 512 + the input's blocked copy 512 = 1280
        LayerCost("0", "Conv2d", 40, 36, 4608, 0, 0, 320, 4608, 768, 0, 1280),
        # ReLU saves its output 4*8*8 = 256; io 256 + 256; backward: grad out + grad in = 512
        LayerCost("1", "ReLU", 0, 0, 0, 256, 0, 512, 0, 512, 0, 512),
        # pool saves its input (the ReLU output, same storage: counted once, above) and int64 indices of
        # its 4*4*4 = 64 outputs: 64 * 8 = 512 bytes; io 256 + 64; the forward makes the indices even
        # without autograd (512 bytes); backward: grad out 64 + grad in 256
        LayerCost("2", "MaxPool2d", 0, 0, 0, 0, 512, 320, 0, 320, 512, 320),
        # flatten: a view, saves nothing, allocates nothing: io 64 + 0; its forward holds its input only
        LayerCost("3", "Flatten", 0, 0, 0, 0, 0, 64, 0, 64, 0, 0),
        # linear: 64*10 = 640 weights + 10 bias; FLOPs 2*64*10 = 1280; saves its input (the pool output
        # seen through the flatten view, first charged here): 64; io 64 + 10; backward: weight and input
        # gradients 2 * 1280, buffers grad out 10 + grad in 64
        LayerCost("4", "Linear", 650, 640, 1280, 64, 0, 74, 2560, 74, 0, 74),
    )


def test_hand_count_totals(tiny):
    assert tiny.params == 690  # 40 + 650
    assert tiny.prunable_params == 676  # 36 + 640
    assert tiny.forward_flops_per_sample == 5888  # 4608 + 1280
    assert tiny.backward_flops_per_sample == 7168  # 4608 + 2560
    assert tiny.input_bytes_per_sample == 256  # 64 * 4
    assert tiny.saved_activation_bytes_per_sample == 1792  # (256 + 64) * 4 + 512
    assert tiny.max_io_bytes_per_sample == 2048  # ReLU: 512 * 4
    # X + the largest forward working set: the conv's, 768 * 4
    assert tiny.inference_bytes_per_sample == 3328  # 256 + 3072
    # X + saved so far + backward buffers, per layer: conv 256 + 0 + 1280*4 = 5376; ReLU 256 + 1024 + 2048
    # = 3328; pool 1792 + 1280 = 3072; flatten 1792; linear 2048 + 296 = 2344; end of forward 2048
    assert tiny.training_bytes_per_sample == 5376


def test_hand_count_memory(tiny):
    # activations for every BP figure: B * A_train = 8 * 5376 = 43008
    assert cost.bp_peak_memory_bytes(tiny, B) == 48528  # 690*4*2 = 5520, + 43008
    assert cost.bp_peak_memory_bytes(tiny, B, "momentum") == 51288  # 690*4*3 = 8280, + 43008
    assert cost.bp_peak_memory_bytes(tiny, B, "adam") == 54048  # 690*4*4 = 11040, + 43008
    # density 0.25: nnz = round(0.25 * 676) = 169 kept weights, 690 - 676 = 14 biases
    # dense_bitmap: 2 * 690*4 + ceil(676/8) = 5520 + 85 = 5605, + 43008
    assert cost.bp_peak_memory_bytes(tiny, B, density=0.25) == 48613
    # dense_bool: 5520 + a 690-byte bool mask, + 43008
    assert cost.bp_peak_memory_bytes(tiny, B, density=0.25, sparse_format="dense_bool") == 49218
    # csr: 2 copies of values (169 + 14)*4 = 732, + one index 169*4 = 676: 2140, + 43008
    assert cost.bp_peak_memory_bytes(tiny, B, density=0.25, sparse_format="csr") == 45148
    # ZO: weights once + batch 8 * 256 = 2048 + max(forward 8 * (3328 - 256) = 24576, one chunk)
    assert cost.zo_chunk_bytes(tiny) == 8970  # n = min(4096, 690): (3*4 + 1) * 690
    assert cost.zo_peak_memory_bytes(tiny, B) == 29384  # 2760 + 2048 + 24576
    assert cost.zo_chunk_bytes(tiny, 0.25) == 3111  # n = D = 183, gathered: (4*4 + 1) * 183
    assert cost.zo_peak_memory_bytes(tiny, B, 0.25) == 29469  # 2760 + 85 + 2048 + 24576
    assert cost.zo_index_bytes(tiny, 0.25, "dense_bool") == 1464  # 8 * 183
    assert cost.zo_peak_memory_bytes(tiny, B, 0.25, "dense_bool") == 31538  # 2760 + 690 + 1464 + 26624
    assert cost.zo_chunk_bytes(tiny, 0.25, "csr") == 2379  # values contiguous: 13 * 183
    assert cost.zo_peak_memory_bytes(tiny, B, 0.25, "csr") == 28032  # 169*8 + 14*4 = 1408, + 26624
    # NTK: 7 * 690*4 = 19320 + the linear layer's 640-weight slice of dm 640*4 = 2560 + 690 bool mask,
    # + 8 * (S 1792 + A_train 5376) = 57344
    assert cost.ntk_scoring_memory_bytes(tiny, B) == 79914


def test_zo_chunks_win_when_activations_are_small(tiny):
    # batch 1: forward 3328 - 256 = 3072 < one chunk 8970
    assert cost.zo_peak_memory_bytes(tiny, 1) == 2760 + 256 + 8970


def test_zo_chunk_is_capped_at_the_local_chunk_size():
    profile = profile_named_model("cnn")  # D = P = 20490 > ZO_CHUNK
    assert cost.zo_chunk_bytes(profile) == 13 * ZO_CHUNK
    assert cost.zo_chunk_bytes(profile, 0.1) == 17 * min(2101, ZO_CHUNK)  # D = 2043 + 58


def test_hand_count_flops(tiny):
    assert cost.bp_step_flops(tiny, B) == 104448  # 8 * (5888 + 7168)
    assert cost.sparse_forward_flops_per_sample(tiny, 0.25) == 1472  # round(0.25 * 5888), all prunable
    assert cost.sparse_backward_flops_per_sample(tiny, 0.25) == 1792  # round(0.25 * 7168)
    assert cost.bp_step_flops(tiny, B, 0.25) == 26112  # 8 * (1472 + 1792)
    # ZO, q = 2: forwards 2*2*8*5888 = 188416; passes 2 * 690 * 4 * (2 + 1) = 16560
    assert cost.zo_step_flops(tiny, B, 2) == 204976
    # density 0.25: 2*2*8*1472 = 47104; D = 169 + 14 = 183: 2 * 183 * 12 = 4392
    assert cost.zo_trainable_params(tiny, 0.25) == 183
    assert cost.zo_step_flops(tiny, B, 2, 0.25) == 51496
    assert cost.ntk_scoring_flops(tiny, B, samples=2) == 417792  # 2 * 2 graphs * 8 * (5888 + 7168)


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
    # every model here starts with a layer that saves its input, the batch: charged once, as input; an NSConv2d
    # also saves its weight's standardisation (per step, not per sample)
    assert measured == (batch * (profile.saved_activation_bytes_per_sample + profile.input_bytes_per_sample)
                        + profile.saved_weight_bytes)


def test_frozen_first_layer_saves_nothing_before_the_first_trainable_layer():
    model = tiny_cnn()
    model[0].requires_grad_(False)
    profile = profile_model(model, TINY_SHAPE)
    # nothing requires grad until the Linear, which saves its input (64 floats) only
    assert profile.saved_activation_bytes_per_sample == 256
    assert _saved_bytes(model, torch.zeros(3, *TINY_SHAPE)) == 3 * 256


@pytest.mark.parametrize("name", ["tiny", "cnn"])
def test_ntk_score_graph_saves_two_graphs_sharing_the_input(name):
    """Build the NTK-SAP score graph as the learning plane does and count what it saves: two graphs of S
    sharing the input X, and the two masked weight products (the peak itself, with gradient buffers, is
    checked on the real ``pruning.saliency`` in test_memory_model)."""
    model, shape = (tiny_cnn(), TINY_SHAPE) if name == "tiny" else build_model(name)
    profile = profile_model(model, shape)
    batch = 3
    model.requires_grad_(False)
    layout = ParamLayout.of(model)  # flat vectors, as pruning.perturbation_energy works on them
    theta = flatten_parameters(model)
    mask = torch.ones_like(theta, requires_grad=True)
    perturbed = theta + 0.01 * torch.randn_like(theta)
    x = torch.randn(batch, *shape)
    resident = {t.untyped_storage().data_ptr() for t in (theta, perturbed, mask)}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in resident:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with saved_tensors_hooks(pack, lambda tensor: tensor):
        clean, noisy = theta * mask, perturbed * mask
        difference = (functional_call(model, layout.views(clean), (x,))
                      - functional_call(model, layout.views(noisy), (x,)))
        score_loss = (difference ** 2).sum()
    # theta*m and (theta + eps*z)*m, saved (through views) by conv/linear: 2 of the 7 parameter-sized copies
    assert saved.pop(clean.untyped_storage().data_ptr()) == profile.params * 4
    assert saved.pop(noisy.untyped_storage().data_ptr()) == profile.params * 4
    loss_difference_bytes = batch * 10 * 4  # pow saves the (B, 10) logit difference: not charged
    activations = sum(saved.values()) - loss_difference_bytes
    assert activations == batch * (2 * profile.saved_activation_bytes_per_sample + profile.input_bytes_per_sample)
    score_loss.backward()
    assert mask.grad is not None


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
    (lambda p: cost.zo_chunk_bytes(p, 0.5, "bitmap"), "sparse_format"),
    (lambda p: cost.zo_step_flops(p, 1, 0), "queries"),
    (lambda p: cost.seed_pairs_bytes(1, 0), "steps"),
    (lambda p: cost.dense_payload_bytes("cnn"), "profile"),
])
def test_bad_arguments_raise_value_error_naming_the_field(tiny, call, field):
    with pytest.raises(ValueError, match=field):
        call(tiny)


def test_profile_records_are_validated():
    with pytest.raises(ValueError, match="forward_flops"):
        LayerCost("0", "Linear", 1, 1, -1, 0, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="backward_elems"):
        LayerCost("0", "Linear", 1, 1, 0, 0, 0, 0, 0, 0, 0, -1)
    with pytest.raises(ValueError, match="bytes_per_element"):
        ModelProfile((), (1,), 0)
