"""The model zoo: small torch networks sized for AIoT devices, named for scenarios.

Contract
--------
* ``small_cnn`` and ``mlp`` build fresh ``nn.Sequential`` networks with torch's default initialisation
  (seed torch's generator, or re-initialise, if you need identical weights).
* ``MODELS`` maps a scenario name to a :class:`ModelSpec`: a factory taking no required arguments and the
  shape of one input sample (no batch dimension), e.g. ``(1, 28, 28)`` for a grey 28x28 image.
* ``build_model(name)`` returns ``(module, input_shape)``; an unknown name raises ``ValueError`` listing the
  valid ones.

All networks end in raw logits (no softmax): the loss function owns the softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Callable, Mapping

from torch import nn

from algorithms._checks import positive_int

__all__ = ["ModelSpec", "MODELS", "small_cnn", "mlp", "build_model"]


def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    channels: tuple[int, ...] = (16, 32),
) -> nn.Sequential:
    """A plain CNN: per stage Conv3x3 (padding 1) -> ReLU -> MaxPool2, then Flatten -> Linear.

    Each stage halves the spatial size (floor), so ``image_size`` must stay >= 1 after every stage.
    Input: ``(batch, in_channels, image_size, image_size)``; output: ``(batch, num_classes)`` logits.
    """
    positive_int("in_channels", in_channels)
    positive_int("num_classes", num_classes)
    positive_int("image_size", image_size)
    if len(channels) == 0:
        raise ValueError("channels must name at least one stage")
    layers: list[nn.Module] = []
    size, previous = image_size, in_channels
    for width in channels:
        positive_int("channels", width)
        layers += [nn.Conv2d(previous, width, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        size //= 2
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} pooling stages")
        previous = width
    layers += [nn.Flatten(), nn.Linear(previous * size * size, num_classes)]
    return nn.Sequential(*layers)


def mlp(input_dim: int = 784, hidden: tuple[int, ...] = (200, 200), num_classes: int = 10) -> nn.Sequential:
    """A multilayer perceptron: Flatten, then Linear -> ReLU per hidden width, then Linear to the logits.

    Any input whose trailing dimensions multiply to ``input_dim`` works (e.g. ``(1, 28, 28)``).
    """
    positive_int("input_dim", input_dim)
    positive_int("num_classes", num_classes)
    layers: list[nn.Module] = [nn.Flatten()]
    previous = input_dim
    for width in hidden:
        positive_int("hidden", width)
        layers += [nn.Linear(previous, width), nn.ReLU()]
        previous = width
    layers.append(nn.Linear(previous, num_classes))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model: ``factory()`` and the per-sample ``input_shape`` it expects."""

    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]  # per sample, e.g. (1, 28, 28)

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise ValueError("factory must be callable")
        if len(self.input_shape) == 0 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.input_shape
        ):
            raise ValueError(f"input_shape must be positive ints, got {self.input_shape!r}")


_MNIST_SHAPE = (1, 28, 28)

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "cnn": ModelSpec(small_cnn, _MNIST_SHAPE),
        "cnn_large": ModelSpec(partial(small_cnn, channels=(32, 64)), _MNIST_SHAPE),
        "mlp": ModelSpec(partial(mlp, input_dim=math.prod(_MNIST_SHAPE)), _MNIST_SHAPE),
        "mlp_small": ModelSpec(partial(mlp, input_dim=math.prod(_MNIST_SHAPE), hidden=(64,)), _MNIST_SHAPE),
    }
)


def build_model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model registered as ``name``; return it with its per-sample input shape."""
    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"model {name!r} is unknown; valid names: {', '.join(sorted(MODELS))}")
    return spec.factory(), spec.input_shape
