"""Many models as ONE batched network: the layers the batched kernels run for a group of V models.

A group of V models (clients, or one client's 2q perturbed copies) with the same architecture runs as one
network: convolutions as one grouped oneDNN convolution in channels-last memory, linear layers as
``torch.baddbmm`` over stacked weights with a backward in ``F.linear``'s orientation (so gradients round as
the reference's), MaxPool before ReLU (the same values and gradients on a quarter of the elements). Why
this layout, with the measurements: ``docs/learning.md`` ("The batched kernels") and ``docs/benchmarks.md``.

SAP (``algorithms.sap``, scaled activation pruning) is an option of the linear layers (``SapBatchedLinear``,
``batched_forward(..., sap_gamma=...)``); a convolutional network refuses it (``supports_sap``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.params import FunctionalModel, max_pool_2x2
from algorithms.sap import check_gamma, kept_count

__all__ = ["Layer", "layer_spec", "layer_params", "BatchedLinear", "SapBatchedLinear", "sap_kept_input",
           "supports_sap", "batched_forward", "channels_last_steps", "picked_log_probs", "mean_nll"]


@dataclass(frozen=True)
class Layer:
    kind: str  # "conv", "linear", "relu", "pool", "flatten"
    weight: tuple[int, tuple[int, ...]] | None = None  # (offset, shape) in the flat vector
    bias: tuple[int, tuple[int, ...]] | None = None
    args: tuple = ()  # conv: (stride, padding, dilation); pool: (kernel, stride, padding, dilation, ceil)


def layer_spec(fm: FunctionalModel) -> tuple[Layer, ...] | None:
    """The model's layers in batched form, or None if some layer is not supported (sequential fallback)."""
    module = fm.module
    if not isinstance(module, nn.Sequential):
        return None
    where = {name: (off, shape) for name, shape, off in zip(fm.layout.names, fm.layout.shapes,
                                                            fm.layout.offsets)}
    layers: list[Layer] = []
    for name, m in module.named_children():
        params = {k for k, _ in m.named_parameters()}
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.bias is None or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None
            layers.append(Layer("conv", where[f"{name}.weight"], where[f"{name}.bias"],
                                 (m.stride, m.padding, m.dilation)))
        elif isinstance(m, nn.Linear):
            if m.bias is None:
                return None
            layers.append(Layer("linear", where[f"{name}.weight"], where[f"{name}.bias"]))
        elif isinstance(m, nn.ReLU) and not params:
            layers.append(Layer("relu"))
        elif isinstance(m, nn.MaxPool2d) and not m.return_indices:
            layers.append(Layer("pool", args=(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)))
        elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
            layers.append(Layer("flatten"))
        else:
            return None
    # ReLU then MaxPool == MaxPool then ReLU (values and gradients): pool first, on 4x more elements
    for i in range(len(layers) - 1):
        if layers[i].kind == "relu" and layers[i + 1].kind == "pool":
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    kinds = [layer.kind for layer in layers]
    spatial = len(fm.input_shape) == 3
    flat_from = kinds.index("flatten") if "flatten" in kinds else len(kinds)
    if any(k in ("conv", "pool") for k in kinds[flat_from:]) or (not spatial and flat_from > 0):
        return None
    pieces = sorted((p[0], math.prod(p[1])) for layer in layers for p in (layer.weight, layer.bias) if p)
    ends = [0] + [o + m for o, m in pieces]
    if kinds[-1] != "linear" or [o for o, _ in pieces] != ends[:-1] or ends[-1] != fm.size:
        return None  # the parameters must tile the flat vector (gradients are concatenated in that order)
    return tuple(layers)


def layer_params(spec, get, n: int, reps: int) -> list:
    """Per-layer (weight, bias) in the batched shapes; ``get(offset, numel)`` gives a parameter's values
    as ``(n, reps, numel)``."""
    out = []
    first = True
    for layer in spec:
        if layer.weight is None:
            out.append(None)
            continue
        (wo, ws), (bo, bs) = layer.weight, layer.bias
        w, b = get(wo, math.prod(ws)), get(bo, math.prod(bs))
        if layer.kind == "conv":  # (n*reps*Cout, Cin, kh, kw): grouped convolution weights
            out.append((w.reshape(n * reps * ws[0], *ws[1:]), b.reshape(-1)))
        elif first:  # the first linear sees each client's input once: (n, reps*out, in)
            out.append((w.reshape(n, reps * ws[0], ws[1]), b.reshape(n, 1, reps * ws[0])))
        else:
            out.append((w.reshape(n * reps, *ws), b.reshape(n * reps, 1, ws[0])))
        first = False
    return out


class BatchedLinear(torch.autograd.Function):
    """``x @ w^T + b`` for a stack of models (x ``(V, B, in)``, w ``(V, out, in)``, b ``(V, 1, out)``), with
    the gradients in the orientation ``F.linear``'s backward uses (``g^T x``, ``g w``), so that they round
    as the reference does (``torch.baddbmm``'s own backward computes ``x^T g``: other rounding)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.baddbmm(b, x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return _linear_grads(ctx.needs_input_grad, g, x, w)


def _linear_grads(needs: tuple[bool, ...], g: torch.Tensor, x: torch.Tensor | None, w: torch.Tensor) -> tuple:
    """``(g w, g^T x, sum of g over the batch)`` for a stack of linear layers, each None unless ``needs``
    says that input wants its gradient (``x`` is None when the weight gradient is not needed)."""
    gx = torch.bmm(g, w) if needs[0] else None
    gw = torch.bmm(g.transpose(1, 2), x) if needs[1] else None
    gb = g.sum(1, keepdim=True) if needs[2] else None
    return gx, gw, gb


def sap_kept_input(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """What SAP keeps of each model's layer input, dense: ``x`` ``(V, B, in)`` with, in each model's ``(B, in)``
    slice, every entry outside its ``kept_count(B * in, gamma)`` largest ``|x|`` set to 0 (``x`` itself when
    every entry is kept). The kept set is the one ``algorithms.sap``'s ``torch.topk`` call picks on that slice
    flattened (the per-row selection is the 1-D one, ties included, as tests/algorithms/test_batched_fedmef.py
    asserts), so the values are those of SAP's rebuilt input whatever its index format (int32 or bitmap:
    memory only)."""
    flat = x.reshape(x.shape[0], -1)
    kept = kept_count(flat.shape[1], gamma)
    if kept == flat.shape[1]:
        return x
    where = torch.topk(flat.abs(), kept, dim=1, sorted=False).indices
    return torch.zeros_like(flat).scatter_(1, where, flat.gather(1, where)).view(x.shape)


class SapBatchedLinear(torch.autograd.Function):
    """``BatchedLinear`` under SAP at ``gamma``: the same forward and input and bias gradients; the weight
    gradient is ``g^T x_kept`` with ``x_kept = sap_kept_input(x, gamma)``, per model what
    ``algorithms.sap.sap_linear`` computes for one model (``grad_out^T`` times its rebuilt input)."""

    @staticmethod
    def forward(ctx, x, w, b, gamma):
        ctx.save_for_backward(sap_kept_input(x, gamma) if ctx.needs_input_grad[1] else None, w)
        return torch.baddbmm(b, x, w.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        kept, w = ctx.saved_tensors
        return (*_linear_grads(ctx.needs_input_grad, g, kept, w), None)


def supports_sap(fm: FunctionalModel) -> bool:
    """Whether the batched network can run ``fm`` under SAP: it is batched at all (``layer_spec``) and has no
    convolution (SAP is batched for linear layers only)."""
    spec = layer_spec(fm)
    return spec is not None and all(layer.kind != "conv" for layer in spec)


def _max_pool(h: torch.Tensor, args: tuple) -> torch.Tensor:
    """``F.max_pool2d``; without autograd, a 2x2/2 window is the max of four strided slices (the same
    values, NaN included; much faster than ATen's NCHW kernel)."""
    kernel, stride, padding, dilation, ceil_mode = args
    if (torch.is_grad_enabled() or ceil_mode or _pair(kernel) != (2, 2) or _pair(stride) != (2, 2)
            or _pair(padding) != (0, 0) or _pair(dilation) != (1, 1)):
        return F.max_pool2d(h, kernel, stride, padding, dilation, ceil_mode)
    return max_pool_2x2(h)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def batched_forward(spec, params, x: torch.Tensor, n: int, reps: int, sap_gamma: float = 0.0) -> torch.Tensor:
    """Logits ``(n*reps, B, classes)`` of n clients' ``reps`` models each. ``x``: the step's input,
    ``(B, n*Cin, H, W)`` channels-last for a convolutional model, ``(n, B, F)`` otherwise. With
    ``sap_gamma > 0`` the linear layers are ``SapBatchedLinear`` (the first one takes its kept set per client,
    which is per model: a client's models share its input); a convolution then raises ``ValueError``."""
    gamma = check_gamma(sap_gamma)

    def linear(h, p):
        return SapBatchedLinear.apply(h, p[0], p[1], gamma) if gamma else BatchedLinear.apply(h, p[0], p[1])

    h, models, started = x, n, False  # models: how many models h currently carries
    for layer, p in zip(spec, params):
        kind = layer.kind
        if kind == "conv":
            if gamma:
                raise ValueError("SAP is batched for linear layers only")
            stride, padding, dilation = layer.args
            h = F.conv2d(h, p[0], p[1], stride, padding, dilation, groups=models)
            models, started = n * reps, True
        elif kind == "relu":
            h = F.relu(h)
        elif kind == "pool":
            h = _max_pool(h, layer.args)
        elif kind == "flatten":
            if h.dim() == 4:  # (B, models*C, H, W) -> (models, B, C*H*W)
                h = h.reshape(h.shape[0], models, -1).transpose(0, 1)
        else:  # linear
            if not started:  # the clients' own inputs, once per client: (n, B, reps*out)
                h = linear(h, p)
                if reps > 1:
                    h = h.view(n, h.shape[1], reps, -1).transpose(1, 2).reshape(n * reps, h.shape[1], -1)
                models, started = n * reps, True
            else:
                h = linear(h, p)
    return h


def channels_last_steps(xs: torch.Tensor) -> torch.Tensor:
    """``(n, steps, B, C, H, W)`` -> ``(steps, B, n*C, H, W)`` in channels-last memory, one copy."""
    n, steps, batch, c, hh, ww = xs.shape
    t = xs.permute(1, 2, 4, 5, 0, 3).contiguous()  # (steps, B, H, W, n, C)
    nc = n * c  # explicit strides: with one channel, view() would not give the channel stride 1 that makes
    # oneDNN see (and produce) channels-last
    return t.as_strided((steps, batch, nc, hh, ww), (batch * hh * ww * nc, hh * ww * nc, 1, ww * nc, nc))


def _ceil_log2(x: int) -> int:
    return max(0, (x - 1).bit_length())


def picked_log_probs(logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The log-probabilities of the labels: ``(V, B, classes), (V, B) -> (V, B)``."""
    return logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)


def mean_nll(picked: torch.Tensor) -> torch.Tensor:
    """``F.nll_loss`` (mean) of every row of ``picked`` (``(V, B)`` label log-probabilities), bit for bit:
    ATen sums the terms with an 8-level cascade (level width 2**max(4, ceil(log2 B) // 8)); so do we."""
    batch = picked.shape[1]
    levels, power = 8, max(4, _ceil_log2(batch) // 8)
    mask = (1 << power) - 1
    partial = [torch.zeros(picked.shape[0], dtype=picked.dtype) for _ in range(levels)]
    for b in range(batch):
        partial[0].sub_(picked[:, b])
        for j in range(levels - 1):
            if b & (mask << (j * power)):
                break
            partial[j + 1].add_(partial[j])
            partial[j].zero_()
    total = torch.zeros_like(partial[0])
    for p in partial:
        total.add_(p)
    return total.div_(batch)
