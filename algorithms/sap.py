"""SAP, scaled activation pruning (FedMef's memory saver): backward keeps only the largest inputs of each layer.

A Conv2d or Linear layer needs its input ``x`` in backward only for the weight gradient (``grad_weight =
grad_out^T x``; ``grad_input`` is a function of the weight and ``grad_out`` alone). SAP's layers run the exact
forward (``F.linear`` / ``F.conv2d``, bit for bit) but save for backward only the ``kept_count(numel, gamma)``
entries of the WHOLE input tensor (batch included, flattened) that are largest in ``|x|``, as their values plus
where they sit (``shared/reference/seed-methods.md`` B.1, FedPruning's ``sap/``). Backward rebuilds ``x`` dense,
zeros elsewhere, and computes:

* ``grad_weight`` from the rebuilt input: approximate (exactly the plain gradient of the input zeroed outside
  the kept set);
* ``grad_input`` from the weight and ``grad_out``: exact; ``grad_bias``: exact;
* at ``gamma == 0`` every entry is kept and the layer saves its input itself (no index): plain gradients, bit
  for bit.

Where the kept entries sit (``SAP_INDEX_FORMATS``):

* ``"int32"``: one int32 flat index per kept value (FedPruning's format): ``(1 - gamma) * (b + 4)`` bytes per
  input element at float width ``b``; break-even with the dense ``b`` at ``gamma = 4 / (b + 4)`` (0.5 in fp32);
* ``"bitmap"``: one bit per input element, packed 8 to a uint8 byte, the values in flat order:
  ``(1 - gamma) * b + 1/8`` bytes per element.

``sap_call`` runs an ``nn.Sequential`` model on explicit parameter tensors with every Conv2d, NSConv2d and
Linear replaced by its SAP version. The memory functions (``sap_saved_bytes``, ``sap_training_bytes_per_sample``,
``sap_forward_bytes_per_sample``, ``sap_activation_bytes``) describe what these layers allocate, per the rules
and the allocator check in ``docs/sap.md``. FLOPs: the backward runs the plain dense kernels on the rebuilt
input, so a SAP step costs the plain step's FLOPs (``torch.utils.flop_counter`` agrees).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms._checks import choice, non_negative_int, positive_int
from algorithms.nsconv import NSConv2d, standardised_weight
from algorithms.profiling import ModelProfile

__all__ = ["SAP_INDEX_FORMATS", "kept_count", "check_gamma", "sap_linear", "sap_conv2d", "sap_call",
           "sap_saved_bytes", "sap_training_bytes_per_sample", "sap_forward_bytes_per_sample",
           "sap_activation_bytes", "SAP_INDEX_BYTES", "DECODE_CHUNK"]

SAP_INDEX_FORMATS = ("int32", "bitmap")
SAP_INDEX_BYTES = 4  # one int32 flat index per kept value
_SELECT_INDEX_BYTES = 8  # topk's int64 indices, alive while the kept set is chosen and encoded
_SAP_KINDS = ("Conv2d", "NSConv2d", "Linear")  # profile layer kinds that sap_call replaces
_VIEW_KINDS = ("Flatten", "Identity")
DECODE_CHUNK = 4096  # input entries decoded at a time in backward (a multiple of 8)


def check_gamma(gamma: object) -> float:
    """``gamma`` as a float if it lies in [0, 1) (the pruned fraction of each saved input)."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    return float(gamma)


def kept_count(numel: int, gamma: float) -> int:
    """How many input entries SAP keeps: ``floor((1 - gamma) * numel)``, at least 1 when ``numel > 0``.

    The product is taken on ``gamma``'s shortest decimal (``repr``), so ``gamma = 0.8`` of 10 keeps 2, not the
    1 that binary ``(1 - 0.8) * 10 = 1.9999999999999996`` would give. Keeping at least one entry means a
    layer's weight gradient is never zero by construction (it matters only for inputs of under 1/(1-gamma)
    entries)."""
    non_negative_int("numel", numel)
    kept = math.floor((1 - Fraction(repr(check_gamma(gamma)))) * numel)
    return max(kept, 1) if numel > 0 else 0


# --------------------------------------------------------------------------------------- the kept set, encoded

def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A flat bool tensor as uint8 bytes, 8 flags each, bit j of byte i = flag 8i + j (zero padded). numpy packs
    (50x faster than shifting in torch); the copy puts the result in torch's allocator, where the memory
    probe sees it."""
    return torch.from_numpy(np.packbits(mask.numpy(), bitorder="little")).clone()


def _unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of ``_pack_bits``: the first ``numel`` flags as a flat bool tensor (in torch's allocator)."""
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=numel, bitorder="little").view(np.bool_)).clone()


def _compress(x: torch.Tensor, gamma: float, index_format: str) -> tuple[torch.Tensor, ...]:
    """What SAP saves of ``x``: ``(x,)`` when every entry is kept, else (kept values, int32 flat indices) or
    (kept values in flat order, packed bitmap)."""
    flat = x.reshape(-1)
    kept = kept_count(flat.numel(), gamma)
    if kept == flat.numel():
        return (x,)
    where = torch.topk(flat.abs(), kept, sorted=False).indices  # int64
    if index_format == "int32":
        return flat[where], where.to(torch.int32)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=x.device)
    mask[where] = True
    del where
    return flat[mask], _pack_bits(mask)


def _rebuild(saved: tuple[torch.Tensor, ...], shape: torch.Size, index_format: str) -> torch.Tensor:
    """The input of ``shape`` with the kept values in place and zeros elsewhere. The indices are decoded
    ``DECODE_CHUNK`` entries at a time, so decoding holds at most 8 * DECODE_CHUNK bytes (int64 copies of
    int32 indices) or DECODE_CHUNK bytes (unpacked flags) besides the dense result."""
    if len(saved) == 1:
        return saved[0]
    values, where = saved
    dense = values.new_zeros(math.prod(shape))
    if index_format == "int32":
        for start in range(0, where.numel(), DECODE_CHUNK):
            dense[where[start:start + DECODE_CHUNK].long()] = values[start:start + DECODE_CHUNK]
        return dense.view(shape)
    offset, step = 0, DECODE_CHUNK // 8
    for start in range(0, where.numel(), step):
        lo = 8 * start
        flags = _unpack_bits(where[start:start + step], min(8 * step, dense.numel() - lo))
        count = int(torch.count_nonzero(flags))
        dense[lo:lo + flags.numel()].masked_scatter_(flags, values[offset:offset + count])
        offset += count
    return dense.view(shape)


# ---------------------------------------------------------------------------------------------- the layers

class _SapLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, index_format):
        ctx.shape, ctx.index_format, ctx.has_bias = x.shape, index_format, bias is not None
        saved = _compress(x, gamma, index_format) if ctx.needs_input_grad[1] else ()
        ctx.save_for_backward(weight, *saved)
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        weight, *saved = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        rows = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:  # as AddmmBackward0 for weight.t(): grad_out^T x, rounded the same way
            x = _rebuild(tuple(saved), ctx.shape, ctx.index_format)
            grad_w = rows.t().mm(x.reshape(-1, x.shape[-1]))
            del x  # the dense rebuild is gone before the input gradient is allocated
        if ctx.needs_input_grad[0]:  # as AddmmBackward0: grad_out @ weight
            grad_x = rows.mm(weight).view(ctx.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b, None, None


class _SapConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, index_format, stride, padding, dilation, groups):
        ctx.shape, ctx.index_format = x.shape, index_format
        ctx.conv = (stride, padding, dilation, groups)
        ctx.bias_shape = None if bias is None else tuple(bias.shape)
        saved = _compress(x, gamma, index_format) if ctx.needs_input_grad[1] else ()
        ctx.save_for_backward(weight, *saved)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        weight, *saved = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.bias_shape is not None and ctx.needs_input_grad[2]
        if need_w:  # one call, as ConvolutionBackward0 makes it, on the rebuilt input
            x = _rebuild(tuple(saved), ctx.shape, ctx.index_format)
        else:  # grad_input reads only the input's shape
            x = grad_out.new_empty(1).expand(ctx.shape)
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, x, weight, ctx.bias_shape, stride, padding, dilation, False, [0, 0], groups,
            [need_x, need_w, need_b])
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def sap_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gamma: float,
               index_format: str) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` (bit for bit) whose backward keeps only the top ``1 - gamma`` of ``x`` by
    magnitude for the weight gradient (module docstring). Nothing of ``x`` is saved when the weight needs no
    gradient; no input gradient is computed when ``x`` needs none."""
    check_gamma(gamma)
    choice("index_format", index_format, SAP_INDEX_FORMATS)
    return _SapLinear.apply(x, weight, bias, float(gamma), index_format)


def _int_pair(field: str, value) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in pair):
        raise ValueError(f"{field} must be an int or a pair of non-negative ints, got {value!r}")
    return pair  # type: ignore[return-value]


def sap_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gamma: float,
               index_format: str, stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, dilation, groups)`` (bit for bit) whose backward keeps only
    the top ``1 - gamma`` of ``x`` by magnitude for the weight gradient (module docstring). ``padding`` is an
    int, a pair, or ``"valid"``; ``"same"`` is refused (torch pads it asymmetrically for even kernels)."""
    check_gamma(gamma)
    choice("index_format", index_format, SAP_INDEX_FORMATS)
    padding = 0 if padding == "valid" else padding
    stride, padding, dilation = _int_pair("stride", stride), _int_pair("padding", padding), \
        _int_pair("dilation", dilation)
    positive_int("groups", groups)
    return _SapConv2d.apply(x, weight, bias, float(gamma), index_format, stride, padding, dilation, groups)


def sap_call(fm, params: list[torch.Tensor], x: torch.Tensor, gamma: float, index_format: str) -> torch.Tensor:
    """``fm.call_with(params, x)`` for an ``nn.Sequential`` model (``fm.module``), with every ``nn.Conv2d``,
    ``NSConv2d`` (kernel ``standardised_weight(weight, gain)``) and ``nn.Linear`` replaced by its SAP version.
    ``params`` holds one tensor per name of ``fm.layout.names``, in that order. Other children run as modules
    (on their own tensors from ``params`` when they have parameters). Raises ``ValueError`` for a model that is
    not an ``nn.Sequential`` or a conv whose ``padding_mode`` is not ``'zeros'``."""
    if not isinstance(fm.module, nn.Sequential):
        raise ValueError(f"sap_call needs an nn.Sequential model, got {type(fm.module).__name__}")
    if len(params) != len(fm.layout.names):
        raise ValueError(f"params must hold {len(fm.layout.names)} tensors, got {len(params)}")
    named = dict(zip(fm.layout.names, params))
    for name, module in fm.module.named_children():
        own = {leaf: named[f"{name}.{leaf}"] for leaf, _ in module.named_parameters()}
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                raise ValueError(f"layer {name!r}: SAP supports padding_mode 'zeros' only")
            weight = own["weight"]
            if isinstance(module, NSConv2d):
                weight = standardised_weight(weight, own["gain"])
            x = sap_conv2d(x, weight, own.get("bias"), gamma, index_format, module.stride, module.padding,
                           module.dilation, module.groups)
        elif isinstance(module, nn.Linear):
            x = sap_linear(x, own["weight"], own.get("bias"), gamma, index_format)
        elif own:
            x = torch.func.functional_call(module, own, (x,))
        else:
            x = module(x)
    return x


# ------------------------------------------------------------------------------------------------- memory

def sap_saved_bytes(elements: int, gamma: float, index_format: str, bytes_per_element: int = 4) -> int:
    """Bytes SAP saves for one input of ``elements`` entries: the ``kept_count`` values, plus an int32 index per
    value (``"int32"``) or a bitmap of ``ceil(elements / 8)`` bytes (``"bitmap"``). When every entry is kept
    (``gamma == 0``) the input itself is saved: ``elements * bytes_per_element``, no index."""
    non_negative_int("elements", elements)
    choice("index_format", index_format, SAP_INDEX_FORMATS)
    positive_int("bytes_per_element", bytes_per_element)
    kept = kept_count(elements, gamma)
    if kept == elements:
        return elements * bytes_per_element
    index_bytes = kept * SAP_INDEX_BYTES if index_format == "int32" else math.ceil(elements / 8)
    return kept * bytes_per_element + index_bytes


def _layer_io_elems(profile: ModelProfile) -> list[tuple[int, int]]:
    """(input, output) elements per sample of each layer, for a chain (each layer eats the previous one's
    output, as in an ``nn.Sequential``): ``io_elems`` is input + output, the output counted 0 when it is a
    view of the input (then the output has the input's size)."""
    shapes, n_in = [], math.prod(profile.input_shape)
    for layer in profile.layers:
        if layer.io_elems < n_in:
            raise ValueError(f"profile: layer {layer.name!r} does not take the previous layer's output")
        n_out = layer.io_elems - n_in or n_in
        if layer.kind == "Linear" and layer.forward_flops ** 2 != 4 * layer.prunable_params * n_in * n_out:
            raise ValueError(f"profile: layer {layer.name!r} does not take the previous layer's output")
        shapes.append((n_in, n_out))
        n_in = n_out
    return shapes


def _sap_layer_bytes(layer, n_in: int, n_out: int, gamma: float, index_format: str,
                     b: int) -> tuple[int, int, int]:
    """(saved, forward transient, backward transient) bytes per sample of one SAP Conv/Linear layer whose
    ``kept_count < n_in``. Forward: the dense input (when no earlier layer keeps it) with, first, ``|x|`` and
    topk's values and int64 indices, then the saved form with the output (and, for a conv, oneDNN's copy of the
    larger of input and output). Backward: the dense rebuild next to the output gradient and, for a conv, the
    plain backward's buffers (a linear layer frees the rebuild before it allocates its input gradient)."""
    kept = kept_count(n_in, gamma)
    saved = sap_saved_bytes(n_in, gamma, index_format, b)
    dense_in = layer.saved_activation_elems * b  # 0 when the input is the model's or kept by an earlier layer
    scratch = max(n_in, n_out) * b if layer.kind != "Linear" else 0
    forward = dense_in + max(n_in * b + kept * (b + _SELECT_INDEX_BYTES), saved + n_out * b + scratch)
    if layer.kind == "Linear":
        backward = max(n_out + n_in, layer.backward_elems) * b
    else:
        backward = (n_in + layer.backward_elems) * b
    return saved, forward, backward


def _sap_phases(profile: ModelProfile, gamma: float, index_format: str) -> tuple[int, int]:
    """(backward peak, forward peak) per sample under SAP; see ``sap_training_bytes_per_sample``."""
    check_gamma(gamma)
    choice("index_format", index_format, SAP_INDEX_FORMATS)
    b, shapes = profile.bytes_per_element, _layer_io_elems(profile)
    active = [layer.kind in _SAP_KINDS and kept_count(n_in, gamma) < n_in
              for layer, (n_in, _) in zip(profile.layers, shapes)]
    first = next((i for i, layer in enumerate(profile.layers) if layer.kind not in _VIEW_KINDS), None)
    # the input batch is freed after the forward when the one layer that would save it saves its SAP form
    released = profile.input_bytes_per_sample if first is not None and active[first] else 0
    alive = forward_peak = profile.input_bytes_per_sample
    backward_peak = 0
    for layer, (n_in, n_out), sap in zip(profile.layers, shapes, active):
        if sap:
            saved, forward, backward = _sap_layer_bytes(layer, n_in, n_out, gamma, index_format, b)
            forward_peak = max(forward_peak, alive + forward)
            alive += saved
        else:
            alive += layer.saved_activation_elems * b + layer.saved_index_bytes
            backward = layer.backward_elems * b
        backward_peak = max(backward_peak, alive - released + backward)
    return max(backward_peak, alive - released), max(forward_peak, alive)


def sap_training_bytes_per_sample(profile: ModelProfile, gamma: float, index_format: str) -> int:
    """The per-sample training activation peak under SAP, from the end of the forward pass on (when the
    gradient buffers exist): ``ModelProfile.training_bytes_per_sample`` with each Conv/Linear layer's saved
    input replaced by its SAP form (``sap_saved_bytes``) and, during that layer's backward, the transient
    dense rebuild of its input. ReLU and MaxPool save what they save without SAP. When the first layer that
    reads the input batch is a SAP layer, nothing keeps the batch past the forward pass, and it is not charged.

    The profile must be a chain (an ``nn.Sequential`` model's). ``kept_count`` is taken per sample, so B times
    this is within B * (b + 4) bytes of the whole batch's count. At ``gamma == 0`` it equals
    ``profile.training_bytes_per_sample``. The forward pass has its own transients (choosing the kept set):
    ``sap_forward_bytes_per_sample``; ``sap_activation_bytes`` combines the two."""
    return _sap_phases(profile, gamma, index_format)[0]


def sap_forward_bytes_per_sample(profile: ModelProfile, gamma: float, index_format: str) -> int:
    """The per-sample peak of the forward pass under SAP, before any gradient buffer exists: the input batch,
    what earlier layers saved, and at a SAP layer ``|x|`` with topk's values and int64 indices (``n * b + k *
    (b + 8)`` for ``n`` input entries, ``k`` kept), then its saved form with its output."""
    return _sap_phases(profile, gamma, index_format)[1]


def saved_layer_input_bytes_per_sample(profile: ModelProfile, gamma: float, index_format: str) -> int:
    """The Conv/Linear layer inputs a training step saves for backward, per sample, each counted once in its
    SAP form (``sap_saved_bytes``; dense at ``gamma == 0``): the quantity SAP compresses, and the paper's
    accounting of activation memory. It leaves out what ReLU and pooling save, the forward selection's
    transients and the backward rebuild, which ``sap_activation_bytes`` charges."""
    check_gamma(gamma)
    return sum(sap_saved_bytes(n_in, gamma, index_format, profile.bytes_per_element)
               for layer, (n_in, _) in zip(profile.layers, _layer_io_elems(profile)) if layer.kind in _SAP_KINDS)


def sap_activation_bytes(profile: ModelProfile, batch_size: int, gamma: float, index_format: str,
                         gradient_bytes: int) -> int:
    """What one SAP training step adds to a device's weights, gradients and optimizer slots (as
    ``batch_size * training_bytes_per_sample`` does without SAP): the larger of the backward part,
    ``B * sap_training_bytes_per_sample``, and the forward part, ``B * sap_forward_bytes_per_sample`` less
    ``gradient_bytes`` (the parameter gradients, which do not exist yet during the forward pass)."""
    positive_int("batch_size", batch_size)
    non_negative_int("gradient_bytes", gradient_bytes)
    backward, forward = _sap_phases(profile, gamma, index_format)
    return max(batch_size * backward, batch_size * forward - gradient_bytes)
