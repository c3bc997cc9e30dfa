"""Flat parameter vectors: the one representation of weights on the learning plane.

A model's parameters travel, aggregate, get masked and get perturbed as ONE flat float32 vector of length P
(the concatenation of every parameter tensor, in ``named_parameters`` order). ``ParamLayout`` knows where each
tensor lives in it; ``FunctionalModel`` runs the network on one such vector (``F.conv2d`` / ``F.linear`` /
``nsconv.ns_conv2d`` on views of it, or ``torch.func.functional_call`` for other architectures, e.g. the
residual ``resnet_small``), so no module is ever mutated. A ``FunctionalModel`` is one architecture of a named
model (``models.build_model``'s ``architecture``); P follows it. Many clients' vectors at once are the
batched kernels' business (``algorithms.batched``), not this module's.

A mask is a flat bool vector of the same length: ``True`` keeps a coordinate. Only prunable coordinates
(conv/linear weights; not biases) may be ``False``.

Deterministic initialisation: ``FunctionalModel.init_weights(seed)`` builds the weights with torch's own
default initialisers under a forked, seeded global generator, so the same seed gives the same bits and the
caller's random state is untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES, build_model, check_architecture
from algorithms.nsconv import NSConv2d, ns_conv2d

__all__ = ["ParamLayout", "FunctionalModel", "flatten_parameters", "max_pool_2x2"]

_PRUNABLE_KINDS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class ParamLayout:
    """Where each parameter tensor sits in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]  # start index of each tensor
    prunable: tuple[bool, ...]  # conv/linear weights

    @classmethod
    def of(cls, module: nn.Module) -> "ParamLayout":
        kinds = {name: mod for name, mod in module.named_modules()}
        names, shapes, offsets, prunable = [], [], [], []
        offset = 0
        for name, param in module.named_parameters():
            owner, _, leaf = name.rpartition(".")
            names.append(name)
            shapes.append(tuple(param.shape))
            offsets.append(offset)
            prunable.append(leaf == "weight" and isinstance(kinds[owner], _PRUNABLE_KINDS))
            offset += param.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), tuple(prunable))

    @property
    def size(self) -> int:
        """P: the length of the flat vector."""
        if not self.names:
            return 0
        return self.offsets[-1] + math.prod(self.shapes[-1])

    def numel(self, i: int) -> int:
        return math.prod(self.shapes[i])

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each parameter as a view into ``flat`` (shape ``(..., P)``; leading dims are kept)."""
        lead = flat.shape[:-1]
        return {name: flat[..., o:o + math.prod(s)].view(*lead, *s)
                for name, s, o in zip(self.names, self.shapes, self.offsets)}

    @cached_property
    def prunable_mask(self) -> torch.Tensor:
        """Bool vector: ``True`` on prunable coordinates (conv/linear weights)."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        for i, keep in enumerate(self.prunable):
            if keep:
                mask[self.offsets[i]:self.offsets[i] + self.numel(i)] = True
        return mask

    @property
    def prunable_size(self) -> int:
        return sum(self.numel(i) for i, p in enumerate(self.prunable) if p)


def flatten_parameters(module: nn.Module) -> torch.Tensor:
    """A detached float32 copy of ``module``'s parameters as one flat vector."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).to(torch.float32)


class FunctionalModel:
    """A named model as a pure function of a flat weight vector: ``fm(weights, x) -> logits``.

    ``architecture`` (``()``: the registered widths) picks the hidden widths; ``self.architecture`` holds them
    resolved (never ``()``)."""

    def __init__(self, name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES, architecture: tuple[int, ...] = ()) -> None:
        self.name = name
        self.architecture = check_architecture(name, architecture)
        self.module, self.input_shape = build_model(name, tuple(input_shape), num_classes, self.architecture)
        self.module.requires_grad_(False)
        self.num_classes = num_classes
        self.layout = ParamLayout.of(self.module)
        self._steps = self._direct_steps()
        self._inference_steps = _pool_first(self._steps)

    @property
    def size(self) -> int:
        return self.layout.size

    def init_weights(self, seed: int) -> torch.Tensor:
        """Torch's default initialisation of this model, reproducible from ``seed`` alone."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh, _ = build_model(self.name, self.input_shape, self.num_classes, self.architecture)
        return flatten_parameters(fresh)

    def __call__(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (a batch) under the flat ``weights`` (one vector of length P). Without autograd a
        ReLU followed by a 2x2 max pool runs as the pool (four strided slices) then the ReLU: the same values
        (max and ReLU commute) in half the time of ATen's NCHW pool."""
        if self._steps is None:
            return torch.func.functional_call(self.module, self.layout.views(weights), (x,))
        for kind, module, spans in self._steps if torch.is_grad_enabled() else self._inference_steps:
            if kind == "nsconv":
                (wo, ws), (bo, bs), (go, gs) = spans
                x = ns_conv2d(x, weights[wo:wo + math.prod(ws)].view(ws), weights[bo:bo + bs[0]],
                              weights[go:go + gs[0]], module.stride, module.padding, module.dilation, module.groups)
            elif kind == "conv":
                (wo, ws), (bo, bs) = spans
                x = F.conv2d(x, weights[wo:wo + math.prod(ws)].view(ws), weights[bo:bo + bs[0]],
                             module.stride, module.padding, module.dilation, module.groups)
            elif kind == "linear":
                (wo, ws), (bo, bs) = spans
                x = F.linear(x, weights[wo:wo + math.prod(ws)].view(ws), weights[bo:bo + bs[0]])
            elif kind == "pool_relu":
                x = F.relu(max_pool_2x2(x))
            else:
                x = module(x)
        return x

    def call_with(self, params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` with the parameters given as one tensor each, in ``layout.names`` order (e.g.
        separate autograd leaves: then gradients come per tensor, with no flat P-sized buffer)."""
        if self._steps is None:
            return torch.func.functional_call(self.module, dict(zip(self.layout.names, params)), (x,))
        k = 0
        for kind, module, _ in self._steps:
            if kind == "nsconv":
                x = ns_conv2d(x, params[k], params[k + 1], params[k + 2], module.stride, module.padding,
                              module.dilation, module.groups)
                k += 3
            elif kind == "conv":
                x = F.conv2d(x, params[k], params[k + 1], module.stride, module.padding, module.dilation,
                             module.groups)
                k += 2
            elif kind == "linear":
                x = F.linear(x, params[k], params[k + 1])
                k += 2
            else:
                x = module(x)
        return x

    def _direct_steps(self):
        """The forward as a list of (kind, module, parameter spans) when the model is an ``nn.Sequential`` of
        biased Conv2d / NSConv2d / Linear and parameter-free layers; None otherwise (then ``functional_call``
        runs it). An NSConv2d is its own kind (``ns_conv2d`` with its ``gain``), never a plain conv.
        Calling ``F.conv2d`` / ``F.linear`` on views of the flat vector computes exactly what the module
        would, without ``functional_call``'s per-call re-parametrisation (~0.2 ms)."""
        if not isinstance(self.module, nn.Sequential):
            return None
        spans = {name: (o, s) for name, s, o in zip(self.layout.names, self.layout.shapes, self.layout.offsets)}
        steps = []
        for name, module in self.module.named_children():
            own = [n for n in spans if n.rpartition(".")[0] == name]
            if isinstance(module, NSConv2d) and module.bias is not None:
                steps.append(("nsconv", module, (spans[f"{name}.weight"], spans[f"{name}.bias"],
                                                 spans[f"{name}.gain"])))
            elif type(module) is nn.Conv2d and module.bias is not None and module.padding_mode == "zeros":
                steps.append(("conv", module, (spans[f"{name}.weight"], spans[f"{name}.bias"])))
            elif isinstance(module, nn.Linear) and module.bias is not None:
                steps.append(("linear", module, (spans[f"{name}.weight"], spans[f"{name}.bias"])))
            elif not own and not any(True for _ in module.parameters()):
                steps.append(("plain", module, ()))
            else:
                return None
        return steps

    def __repr__(self) -> str:
        return (f"FunctionalModel({self.name!r}, input_shape={self.input_shape}, "
                f"architecture={self.architecture}, P={self.size})")


def _is_pool_2x2(module: nn.Module) -> bool:
    """An ``nn.MaxPool2d`` of 2x2 windows at stride 2, no padding, dilation 1, floor mode."""
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    return (isinstance(module, nn.MaxPool2d) and not module.return_indices and not module.ceil_mode
            and pair(module.kernel_size) == (2, 2) and pair(module.stride) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1))


def _pool_first(steps):
    """``steps`` with every ReLU directly followed by a 2x2 max pool merged into one ``pool_relu`` step."""
    if steps is None:
        return None
    out, i = [], 0
    while i < len(steps):
        if (i + 1 < len(steps) and steps[i][0] == "plain" and type(steps[i][1]) is nn.ReLU
                and steps[i + 1][0] == "plain" and _is_pool_2x2(steps[i + 1][1])):
            out.append(("pool_relu", steps[i + 1][1], ()))
            i += 2
        else:
            out.append(steps[i])
            i += 1
    return out


def max_pool_2x2(h: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(h, 2)`` without autograd: the max of four strided slices (the same values, NaN
    included, for any memory layout)."""
    hh, ww = h.shape[2] // 2 * 2, h.shape[3] // 2 * 2
    top = torch.maximum(h[:, :, 0:hh:2, 0:ww:2], h[:, :, 0:hh:2, 1:ww:2])
    return torch.maximum(top, torch.maximum(h[:, :, 1:hh:2, 0:ww:2], h[:, :, 1:hh:2, 1:ww:2]), out=top)
