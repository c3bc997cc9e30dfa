"""NSConv: a BN-free normalised convolution whose zeros stay zero, for sparse training (FedMef's conv option).

FedMef trains BN-free ("Normalized Sparse Convolution ... to center activations around zero and enable
effective pruning with BN-free training, particularly under small batch sizes"); the exact formula was not
readable (``shared/reference/seed-methods.md`` B.1). This module implements the reading the issue asks for, a
weight-standardised, scaled convolution (as in NF-Nets' scaled weight standardisation), adapted so that a
sparse kernel stays sparse:

    w_hat[o] = gain[o] * (w[o] - mu[o] * nz(w[o])) / (sigma[o] * sqrt(n) + eps)

per output filter ``o``, where ``mu`` and ``sigma`` are the mean and (population) standard deviation of the
filter's ``n = in_channels/groups * kh * kw`` fan-in entries and ``nz(w) = 1[w != 0]``. On a dense kernel
(no exact zeros) this is exactly scaled weight standardisation: every filter has zero mean, so the outputs are
centred for any input, and unit ``1/sqrt(n)`` scale, so activations keep their variance without batch
statistics. A pruned weight is exactly 0 and stays 0 in ``w_hat``: centring only the nonzero entries keeps
the kernel's sparsity pattern, which plain standardisation (``w - mu`` everywhere) would destroy. A weight
regrown at 0 is 0 in the forward but gets the gradient ``gain / (sigma sqrt(n))`` (the indicator has none), so
it can grow.

Parameters: ``weight`` (prunable, as any conv weight), ``bias`` and ``gain`` (one per output filter, 1 at
initialisation; neither is ever pruned). ``ns_conv2d`` is the same forward on explicit tensors (for flat-vector
models).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NSConv2d", "ns_conv2d", "standardised_weight", "NS_EPS"]

NS_EPS = 1e-4  # added to sigma * sqrt(n): a filter of equal weights stays finite


def standardised_weight(weight: torch.Tensor, gain: torch.Tensor, eps: float = NS_EPS) -> torch.Tensor:
    """``w_hat`` of the module docstring for a conv ``weight`` (out, in/groups, kh, kw) and ``gain`` (out,)."""
    fan_in = math.prod(weight.shape[1:])
    flat = weight.reshape(weight.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, keepdim=True, unbiased=False)
    centred = flat - mean * (flat != 0)
    scaled = centred / (std * math.sqrt(fan_in) + eps) * gain.reshape(-1, 1)
    return scaled.reshape(weight.shape)


def ns_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gain: torch.Tensor,
              stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """The NSConv forward: ``F.conv2d`` with ``standardised_weight(weight, gain)``."""
    return F.conv2d(x, standardised_weight(weight, gain), bias, stride, padding, dilation, groups)


class NSConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a standardised, scaled kernel and a per-filter ``gain`` (see the module docstring).
    Takes ``nn.Conv2d``'s arguments; ``padding_mode`` must be ``'zeros'``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError("NSConv2d supports padding_mode 'zeros' only")
        self.gain = nn.Parameter(torch.ones(self.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ns_conv2d(x, self.weight, self.bias, self.gain, self.stride, self.padding, self.dilation,
                         self.groups)
