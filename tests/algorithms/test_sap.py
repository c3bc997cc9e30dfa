"""SAP (scaled activation pruning): the kept set, exact forward, exact input/bias gradients, the weight gradient of
the pruned input, both index formats, gamma 0 = plain, ``sap_call``, and the memory model against the allocator
(``docs/sap.md``)."""

import math
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from algorithms import cost
from algorithms.local import ClientData, ModelState, bp_update
from algorithms.memory_probe import measure_peak
from algorithms.nsconv import NSConv2d
from algorithms.optim import OptimizerStep
from algorithms.params import FunctionalModel, ParamLayout
from algorithms.profiling import profile_named_model
from algorithms.sap import (
    DECODE_CHUNK,
    SAP_INDEX_FORMATS,
    kept_count,
    sap_activation_bytes,
    sap_call,
    sap_conv2d,
    sap_forward_bytes_per_sample,
    sap_linear,
    sap_saved_bytes,
    sap_training_bytes_per_sample,
    saved_layer_input_bytes_per_sample,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GAMMAS = (0.5, 0.8)
CONV_ARGS = {"stride": 2, "padding": 1, "dilation": 1, "groups": 2}


def _saved(fn, *args):
    """What autograd saves while ``fn(*args)`` runs, and its output."""
    saved = []
    with saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn(*args)
    return saved, out


def _kept_mask(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """The top kept_count of |x| over the whole tensor (no ties in the tensors used here)."""
    mask = torch.zeros(x.numel(), dtype=torch.bool)
    mask[x.detach().abs().reshape(-1).topk(kept_count(x.numel(), gamma)).indices] = True
    return mask.view(x.shape)


def _grads(layer, x, w, b, grad_out):
    leaves = [t.detach().requires_grad_(True) for t in (x, w, b)]
    out = layer(*leaves)
    return out, torch.autograd.grad(out, leaves, grad_out)


def _layers(kind: str, gamma: float, index_format: str):
    """(SAP layer, plain layer, x, w, b) on random tensors without ties in |x|."""
    gen = torch.Generator().manual_seed(1)
    if kind == "linear":
        x, w, b = torch.randn(6, 20, generator=gen), torch.randn(7, 20, generator=gen), torch.randn(7, generator=gen)
        return (lambda *t: sap_linear(*t, gamma, index_format)), F.linear, x, w, b
    x, w, b = (torch.randn(3, 4, 9, 9, generator=gen), torch.randn(6, 2, 3, 3, generator=gen),
               torch.randn(6, generator=gen))
    return ((lambda *t: sap_conv2d(*t, gamma, index_format, **CONV_ARGS)),
            (lambda *t: F.conv2d(*t, **CONV_ARGS)), x, w, b)


# -------------------------------------------------------------------------------------------- the kept set

def test_kept_count():
    assert kept_count(10, 0.8) == 2  # binary (1 - 0.8) * 10 = 1.9999999999999996 would floor to 1
    assert kept_count(10, 0.5) == 5
    assert kept_count(1001, 0.8) == 200
    assert kept_count(7, 0.0) == 7
    assert kept_count(3, 0.9) == 1  # at least one entry
    assert kept_count(0, 0.5) == 0
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="gamma"):
            kept_count(10, bad)


X_HAND = torch.tensor([[0.5, -3.0, 1.0, 0.1], [2.0, -0.2, -4.0, 0.0]])  # kept at 0.5: flat 1, 2, 4, 6


@pytest.mark.parametrize("index_format", SAP_INDEX_FORMATS)
def test_kept_set_on_a_hand_made_tensor(index_format):
    w = torch.ones(3, 4, requires_grad=True)
    saved, _ = _saved(sap_linear, X_HAND, w, None, 0.5, index_format)
    assert saved[0] is w or torch.equal(saved[0], w)  # the weight, kept by reference
    values, where = saved[1:]
    if index_format == "int32":
        assert where.dtype == torch.int32
        order = where.argsort()
        assert where[order].tolist() == [1, 2, 4, 6]
        assert values[order].tolist() == [-3.0, 1.0, 2.0, -4.0]
    else:  # bits 1, 2, 4, 6 of one byte, the values in flat order
        assert where.dtype == torch.uint8 and where.tolist() == [2 + 4 + 16 + 64]
        assert values.tolist() == [-3.0, 1.0, 2.0, -4.0]


@pytest.mark.parametrize("index_format", SAP_INDEX_FORMATS)
def test_rebuild_across_decode_chunks(index_format):
    """An input over two decode chunks and not a multiple of 8: the weight gradient of a one-output layer with
    unit output gradient is the rebuilt input itself."""
    n = 2 * DECODE_CHUNK + 5
    x = torch.randn(1, n, generator=torch.Generator().manual_seed(2))
    w = torch.zeros(1, n, requires_grad=True)
    (grad_w,) = torch.autograd.grad(sap_linear(x, w, None, 0.8, index_format).sum(), w)
    assert torch.equal(grad_w, x * _kept_mask(x, 0.8))


# --------------------------------------------------------------------------------------- forward and backward

@pytest.mark.parametrize("kind", ("linear", "conv"))
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("index_format", SAP_INDEX_FORMATS)
def test_forward_exact_input_and_bias_gradients_exact_weight_gradient_of_the_pruned_input(kind, gamma,
                                                                                          index_format):
    sap, plain, x, w, b = _layers(kind, gamma, index_format)
    grad_out = torch.randn_like(plain(x, w, b))
    out, (gx, gw, gb) = _grads(sap, x, w, b, grad_out)
    plain_out, (px, _, pb) = _grads(plain, x, w, b, grad_out)
    _, (_, masked_gw, _) = _grads(plain, x * _kept_mask(x, gamma), w, b, grad_out)
    assert torch.equal(out, plain_out)
    assert torch.equal(gx, px) and torch.equal(gb, pb)
    assert torch.equal(gw, masked_gw)


@pytest.mark.parametrize("kind", ("linear", "conv"))
def test_both_index_formats_give_the_same_gradients(kind):
    results = []
    for index_format in SAP_INDEX_FORMATS:
        sap, plain, x, w, b = _layers(kind, 0.5, index_format)
        results.append(_grads(sap, x, w, b, torch.ones_like(plain(x, w, b)))[1])
    assert all(torch.equal(a, c) for a, c in zip(*results))


@pytest.mark.parametrize("kind", ("linear", "conv"))
@pytest.mark.parametrize("index_format", SAP_INDEX_FORMATS)
def test_gamma_zero_is_plain_and_saves_the_input_itself(kind, index_format):
    sap, plain, x, w, b = _layers(kind, 0.0, index_format)
    grad_out = torch.randn_like(plain(x, w, b))
    sap_grads, plain_grads = _grads(sap, x, w, b, grad_out)[1], _grads(plain, x, w, b, grad_out)[1]
    assert all(torch.equal(s, p) for s, p in zip(sap_grads, plain_grads))
    saved, _ = _saved(sap, x, w.clone().requires_grad_(True), b)
    assert len(saved) == 2 and saved[1] is x


@pytest.mark.parametrize("kind", ("linear", "conv"))
def test_requires_grad_flags(kind):
    sap, plain, x, w, b = _layers(kind, 0.5, "bitmap")
    grad_out = torch.randn_like(plain(x, w, b))
    # the model's first layer: no input gradient
    wl, bl = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    sap(x, wl, bl).backward(grad_out)
    assert wl.grad is not None and bl.grad is not None
    # a frozen layer saves nothing of its input and still passes the exact input gradient
    xl = x.clone().requires_grad_(True)
    saved, out = _saved(sap, xl, w, b)
    assert not any(t.shape == x.shape or t.dtype in (torch.int32, torch.uint8) for t in saved)
    (gx,) = torch.autograd.grad(out, xl, grad_out)
    assert torch.equal(gx, _grads(plain, x, w, b, grad_out)[1][0])


def test_linear_without_bias_and_bad_arguments():
    x, w = torch.randn(4, 5), torch.randn(3, 5, requires_grad=True)
    assert torch.equal(sap_linear(x, w, None, 0.5, "int32"), F.linear(x, w))
    with pytest.raises(ValueError, match="index_format"):
        sap_linear(x, w, None, 0.5, "csr")
    with pytest.raises(ValueError, match="gamma"):
        sap_conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3), None, 1.0, "int32")


# ------------------------------------------------------------------------------------------------- sap_call

class _SapModel:
    """A FunctionalModel whose ``call_with`` is ``sap_call``: what ``bp_update`` needs (layout, call_with)."""

    def __init__(self, fm, gamma: float, index_format: str) -> None:
        self.fm, self.gamma, self.index_format, self.layout = fm, gamma, index_format, fm.layout

    def call_with(self, params, x):
        return sap_call(self.fm, params, x, self.gamma, self.index_format)


@cache
def _setup(name: str):
    fm = FunctionalModel(name)
    gen = torch.Generator().manual_seed(0)
    data = ClientData(torch.randn(200, *fm.input_shape, generator=gen),
                      torch.randint(0, fm.num_classes, (200,), generator=gen))
    return fm, profile_named_model(name), ModelState(fm.init_weights(0)), data


@pytest.mark.parametrize("name", ("mlp_small", "cnn"))
def test_sap_call_equals_call_with(name):
    fm, _, state, data = _setup(name)
    params = [p.requires_grad_(True) for p in (v.clone() for v in fm.layout.views(state.weights).values())]
    plain = fm.call_with(params, data.x[:16])
    for index_format in SAP_INDEX_FORMATS:
        assert torch.equal(sap_call(fm, params, data.x[:16], 0.5, index_format), plain)
    grads = torch.autograd.grad(sap_call(fm, params, data.x[:16], 0.0, "int32").sum(), params)
    assert all(torch.equal(g, p) for g, p in zip(grads, torch.autograd.grad(plain.sum(), params)))


def test_sap_call_runs_nsconv_and_refuses_non_sequential():
    torch.manual_seed(3)
    module = nn.Sequential(NSConv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    with torch.no_grad():
        module[0].gain.uniform_(0.5, 2.0)
    fm = type("FM", (), {"module": module, "layout": ParamLayout.of(module)})()
    assert fm.layout.names[:3] == ("0.weight", "0.bias", "0.gain")
    x = torch.randn(2, 2, 5, 5)
    assert torch.equal(sap_call(fm, list(module.parameters()), x, 0.5, "bitmap"), module(x))
    fm.module = nn.ModuleDict({"a": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="Sequential"):
        sap_call(fm, [], x, 0.5, "int32")


@pytest.mark.parametrize("name", ("mlp_small", "cnn"))
def test_flop_counter_charges_the_dense_backward(name):
    """flop_counter counts the weight gradient's dense matmul/convolution on the rebuilt input: SAP's step
    is charged exactly the plain step's FLOPs (``docs/sap.md``)."""
    fm, profile, state, data = _setup(name)
    with FlopCounterMode(display=False) as counter:
        bp_update(_SapModel(fm, 0.8, "int32"), state, data, 1, 16, OptimizerStep("sgd", 0.01), 1)
    assert counter.get_total_flops() == cost.bp_step_flops(profile, 16)


# --------------------------------------------------------------------------------------------------- memory

def test_saved_bytes():
    assert sap_saved_bytes(1000, 0.5, "int32") == 500 * 8  # break-even with dense fp32
    assert sap_saved_bytes(1000, 0.5, "bitmap") == 500 * 4 + 125
    assert sap_saved_bytes(1001, 0.8, "bitmap") == 200 * 4 + 126
    assert sap_saved_bytes(1000, 0.0, "int32") == sap_saved_bytes(1000, 0.0, "bitmap") == 4000  # no index
    assert sap_saved_bytes(1000, 0.5, "int32", bytes_per_element=2) == 3000  # fp16: worse than dense
    assert sap_saved_bytes(0, 0.5, "bitmap") == 0


def test_training_bytes_by_hand_on_mlp_small():
    """mlp_small = Flatten, Linear 784->64, ReLU, Linear 64->10; b = 4, X = 3136 bytes, gamma 0.5, int32:
    forward peak at Linear 1: X + |x| 3136 + topk 392 * (4 + 8); backward peak at Linear 1: its saved 3136
    (values + int32 indices), ReLU's 256, Linear 2's 32 * 8, less nothing else (the batch is freed), plus the
    output gradient 256 and the dense rebuild 3136 = 6528 (before Linear 2's is added: 3136 + 256 + 3136)."""
    profile = profile_named_model("mlp_small")
    assert sap_forward_bytes_per_sample(profile, 0.5, "int32") == 3136 + 3136 + 392 * 12
    assert sap_training_bytes_per_sample(profile, 0.5, "int32") == 3136 + 256 + 3136
    assert sap_activation_bytes(profile, 10, 0.5, "int32", 0) == 10 * (3136 + 3136 + 392 * 12)
    assert sap_activation_bytes(profile, 10, 0.5, "int32", 10 ** 6) == 10 * 6528
    for name in ("mlp_small", "cnn"):
        profile = profile_named_model(name)
        for index_format in SAP_INDEX_FORMATS:
            assert sap_training_bytes_per_sample(profile, 0.0, index_format) == profile.training_bytes_per_sample


@cache
def _memory_row(name: str, batch: int, gamma: float, index_format: str) -> tuple[int, int]:
    """(modelled, measured) peak bytes of one SGD step of ``bp_update`` through ``sap_call``."""
    fm, profile, state, data = _setup(name)
    gradient_bytes = profile.params * profile.bytes_per_element
    modelled = (cost.parameter_state_bytes(profile, 2)
                + sap_activation_bytes(profile, batch, gamma, index_format, gradient_bytes))
    measured = measure_peak(bp_update, _SapModel(fm, gamma, index_format), state, data, 1, batch,
                            OptimizerStep("sgd", 0.01), 1).peak_bytes
    return modelled, measured


@pytest.mark.parametrize("name, batch", [("mlp_small", 8), ("mlp_small", 64), ("cnn", 8), ("cnn", 64)])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("index_format", SAP_INDEX_FORMATS)
def test_peak_memory_within_ten_percent(name, batch, gamma, index_format):
    modelled, measured = _memory_row(name, batch, gamma, index_format)
    assert abs(modelled - measured) / measured <= 0.10, (modelled, measured)


@pytest.mark.parametrize("index_format", SAP_INDEX_FORMATS)
def test_batch_term_scales_on_cnn(index_format):
    """Between batch 8 and 64 the measured peak grows by the modelled per-sample bytes (within 1 %)."""
    slope = (_memory_row("cnn", 64, 0.5, index_format)[1] - _memory_row("cnn", 8, 0.5, index_format)[1]) / 56
    per_sample = sap_training_bytes_per_sample(_setup("cnn")[1], 0.5, index_format)
    assert slope == pytest.approx(per_sample, rel=0.01)
    assert math.isfinite(slope)


def test_saved_layer_inputs_by_hand_on_mlp_small():
    """mlp_small saves its two Linear inputs (784 and 64 entries): 3392 bytes dense; at gamma 0.5 with a
    bitmap, 392 * 4 + 98 and 32 * 4 + 8 bytes."""
    profile = profile_named_model("mlp_small", (1, 28, 28), 10)
    assert saved_layer_input_bytes_per_sample(profile, 0.0, "bitmap") == (784 + 64) * 4
    assert saved_layer_input_bytes_per_sample(profile, 0.5, "bitmap") == 392 * 4 + 98 + 32 * 4 + 8
    assert saved_layer_input_bytes_per_sample(profile, 0.5, "int32") == 392 * 8 + 32 * 8
