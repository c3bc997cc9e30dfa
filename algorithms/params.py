"""Flat parameter vectors: the one representation of weights on the learning plane.

A model's parameters travel, aggregate, get masked and get perturbed as ONE flat float32 vector of length P
(the concatenation of every parameter tensor, in ``named_parameters`` order). ``ParamLayout`` knows where each
tensor lives in it; ``FunctionalModel`` runs the network on any such vector (or on a stack of them, one per
client, with ``torch.func.vmap``) through ``torch.func.functional_call``, so no module is ever mutated.

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
from torch import nn

from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES, build_model

__all__ = ["ParamLayout", "FunctionalModel", "flatten_parameters"]

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
    """A named model as a pure function of a flat weight vector: ``fm(weights, x) -> logits``."""

    def __init__(self, name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        self.name = name
        self.module, self.input_shape = build_model(name, tuple(input_shape), num_classes)
        self.module.requires_grad_(False)
        self.num_classes = num_classes
        self.layout = ParamLayout.of(self.module)

    @property
    def size(self) -> int:
        return self.layout.size

    def init_weights(self, seed: int) -> torch.Tensor:
        """Torch's default initialisation of this model, reproducible from ``seed`` alone."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh, _ = build_model(self.name, self.input_shape, self.num_classes)
        return flatten_parameters(fresh)

    def __call__(self, weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (a batch) under the flat ``weights`` (one vector of length P)."""
        return torch.func.functional_call(self.module, self.layout.views(weights), (x,))

    def __repr__(self) -> str:
        return f"FunctionalModel({self.name!r}, input_shape={self.input_shape}, P={self.size})"
