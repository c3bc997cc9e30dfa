"""Structured (filter) pruning on flat weight vectors: score filters, pick the survivors, rebuild a smaller
dense network.

A model's **prunable groups** are its architecture entries (``models.py``): one per prunable hidden layer, in
forward order. A group has *producers* (the layers whose output filters / units it counts: dim 0 of their
weight, and their bias and NSConv gain) and *consumers* (the layers that read those channels: dim 1 of their
weight). In ``resnet_small`` a block's group has two producers, the block's second conv and its 1x1
projection (their outputs are summed channel by channel), and its consumers are the next block's first conv
and projection (or the classifier); the block's first conv has the same width (one entry per block, as the
authors' code builds it), its own output channels being the *inner* channels that only the second conv reads.

* ``filter_scores(fm, weights)``: per group, the L1 norm of each output filter (unit), summed over the
  group's producers (a ResNet block's output channel j: |conv2[j]|_1 + |proj[j]|_1). Biases do not count.
* ``band_keep(scores, band)``: keep j iff mu - band*sigma <= s_j <= mu + band*sigma (population sigma), so
  both tails are cut; if nothing is in the band, the highest-scoring filter alone.
* ``shrink(fm, weights, keep, copy=True)``: the smaller dense network's architecture and flat weights: the
  kept filters of every producer, the matching input channels of every consumer (for a Linear after Flatten,
  the channel's whole block of spatial columns), copied; with ``copy=False`` torch's fresh initialisation of
  the smaller network from ``seed`` instead (the authors' code re-initialises). A ResNet block keeps the
  ``len(keep)`` inner channels of its first conv with the largest L1 norms.

Exactness: with plain convs and linears, the copied small network computes exactly what the original does
with the pruned filters (weights and biases) set to zero. With ``NSConv2d`` it does not: the standardisation's
mean and deviation run over a filter's whole fan-in, which loses the pruned input channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from algorithms.models import ResNetSmall
from algorithms.params import FunctionalModel

__all__ = ["Group", "prunable_groups", "filter_scores", "band_keep", "inner_keep", "shrink", "prune_filters"]

_PARAMETERISED = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class Group:
    """One architecture entry: module paths of its ``producers`` and ``consumers``, and for a ResNet block the
    ``inner`` (first conv, second conv) pair whose channels share the entry's width."""

    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    inner: tuple[str, str] | None = None


def prunable_groups(fm: FunctionalModel) -> tuple[Group, ...]:
    """The model's prunable groups, one per architecture entry (module docstring)."""
    module = fm.module
    if isinstance(module, ResNetSmall):
        blocks = [f"blocks.{i}" for i in range(len(module.blocks))]
        groups = [Group(("stem",), (f"{blocks[0]}.conv1", f"{blocks[0]}.proj"))]
        for i, block in enumerate(blocks):
            after = ("fc",) if i + 1 == len(blocks) else (f"{blocks[i + 1]}.conv1", f"{blocks[i + 1]}.proj")
            groups.append(Group((f"{block}.conv2", f"{block}.proj"), after, (f"{block}.conv1", f"{block}.conv2")))
        return tuple(groups)
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"model {fm.name!r}: no structured pruning rule for {type(module).__name__}")
    layers = [name for name, m in module.named_children() if isinstance(m, _PARAMETERISED)]
    groups = tuple(Group((a,), (b,)) for a, b in zip(layers, layers[1:]))
    if len(groups) != len(fm.architecture):
        raise ValueError(f"model {fm.name!r}: {len(groups)} prunable layers for architecture {fm.architecture}")
    return groups


def _l1_per_filter(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().reshape(weight.shape[0], -1).sum(dim=1)


def filter_scores(fm: FunctionalModel, weights: torch.Tensor) -> list[torch.Tensor]:
    """Per architecture entry, the L1 norm of each output filter (unit), float64, summed over producers."""
    views = fm.layout.views(weights)
    return [sum(_l1_per_filter(views[f"{p}.weight"]).double() for p in group.producers)
            for group in prunable_groups(fm)]


def band_keep(scores: torch.Tensor, band: float) -> torch.Tensor:
    """Sorted int64 indices j with mu - band*sigma <= scores[j] <= mu + band*sigma (mean and population
    standard deviation of ``scores``, in float64); the index of the largest score if none is in the band."""
    if scores.dim() != 1 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty vector, got shape {tuple(scores.shape)}")
    if not band > 0:
        raise ValueError(f"band must be > 0, got {band!r}")
    s = scores.double()
    mu, sigma = s.mean(), s.std(unbiased=False)
    kept = torch.nonzero((s >= mu - band * sigma) & (s <= mu + band * sigma)).flatten()
    if sigma == 0:
        kept = torch.arange(s.numel())
    if kept.numel() == 0:
        kept = s.argmax().reshape(1)
    return kept.to(torch.int64)


def inner_keep(fm: FunctionalModel, weights: torch.Tensor, group: Group, count: int) -> torch.Tensor:
    """Sorted indices of the ``count`` inner channels (a ResNet block's first conv) with the largest L1 norms
    (ties to the lower index)."""
    scores = _l1_per_filter(fm.layout.views(weights)[f"{group.inner[0]}.weight"]).double()
    order = sorted(range(scores.numel()), key=lambda j: (-float(scores[j]), j))
    return torch.tensor(sorted(order[:count]), dtype=torch.int64)


def _slice_out(views: dict, path: str, keep: torch.Tensor) -> None:
    for leaf in ("weight", "bias", "gain"):
        name = f"{path}.{leaf}"
        if name in views:
            views[name] = views[name].index_select(0, keep)


def _slice_in(views: dict, path: str, keep: torch.Tensor, channels: int) -> None:
    name = f"{path}.weight"
    weight = views[name]
    if weight.dim() == 2 and weight.shape[1] != channels:  # a Linear after Flatten: channel-major columns
        spatial = weight.shape[1] // channels
        columns = (keep.reshape(-1, 1) * spatial + torch.arange(spatial)).reshape(-1)
        views[name] = weight.index_select(1, columns)
    else:
        views[name] = weight.index_select(1, keep)


def shrink(fm: FunctionalModel, weights: torch.Tensor, keep: list[torch.Tensor], copy: bool = True,
           seed: int = 0) -> tuple[tuple[int, ...], torch.Tensor]:
    """``(architecture, flat weights)`` of the smaller dense network that keeps filters ``keep[i]`` (sorted
    indices) of architecture entry i: the survivors copied (module docstring), or with ``copy=False`` torch's
    default initialisation of the smaller network from ``seed``."""
    groups = prunable_groups(fm)
    if len(keep) != len(groups):
        raise ValueError(f"keep has {len(keep)} entries; model {fm.name!r} has {len(groups)}")
    keep = [torch.as_tensor(k, dtype=torch.int64) for k in keep]
    for k, width in zip(keep, fm.architecture):
        if k.numel() == 0 or len(set(k.tolist())) != k.numel() or int(k.min()) < 0 or int(k.max()) >= width:
            raise ValueError(f"keep must be non-empty distinct indices below the width {width}, got {k.tolist()}")
    architecture = tuple(int(k.numel()) for k in keep)
    small = FunctionalModel(fm.name, fm.input_shape, fm.num_classes, architecture)
    if not copy:
        return architecture, small.init_weights(seed)
    views = dict(fm.layout.views(weights.detach()))
    for group, k, width in zip(groups, keep, fm.architecture):
        if group.inner is not None:
            inner = inner_keep(fm, weights, group, k.numel())
            _slice_out(views, group.inner[0], inner)
            _slice_in(views, group.inner[1], inner, width)
        for path in group.producers:
            _slice_out(views, path, k)
        for path in group.consumers:
            _slice_in(views, path, k, width)
    parts = []
    for name, shape in zip(small.layout.names, small.layout.shapes):
        if tuple(views[name].shape) != shape:
            raise AssertionError(f"shrink: {name} is {tuple(views[name].shape)}, expected {shape}")
        parts.append(views[name].reshape(-1))
    return architecture, torch.cat(parts).to(torch.float32).contiguous()


def prune_filters(fm: FunctionalModel, weights: torch.Tensor, band: float, copy: bool = True,
                  seed: int = 0) -> tuple[tuple[int, ...], torch.Tensor]:
    """One automatic pruning step: ``band_keep`` on every entry's ``filter_scores``, then ``shrink``."""
    keep = [band_keep(s, band) for s in filter_scores(fm, weights)]
    return shrink(fm, weights, keep, copy, seed)
