"""The model zoo: small torch networks sized for AIoT devices, named for scenarios.

Contract
--------
* ``small_cnn`` and ``mlp`` build fresh ``nn.Sequential`` networks with torch's default initialisation
  (seed torch's generator, or re-initialise, if you need identical weights).
* ``MODELS`` maps a scenario name to a :class:`ModelSpec`: a builder taking the shape of one input sample
  (no batch dimension, e.g. ``(1, 28, 28)`` for a grey 28x28 image) and the number of classes.
* ``build_model(name, input_shape, num_classes)`` returns ``(module, input_shape)``; the defaults are
  Fashion-MNIST's ``(1, 28, 28)`` and 10 classes. An unknown name raises ``ValueError`` listing the valid
  ones. Every model is an ``nn.Sequential`` of leaf layers, so the cost profile reads its layers in order.

All networks end in raw logits (no softmax): the loss function owns the softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from torch import nn

from algorithms._checks import positive_int

__all__ = ["ModelSpec", "MODELS", "small_cnn", "mlp", "build_model", "check_input_shape",
           "DEFAULT_INPUT_SHAPE", "DEFAULT_NUM_CLASSES"]


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


DEFAULT_INPUT_SHAPE = (1, 28, 28)  # Fashion-MNIST: one grey 28x28 image
DEFAULT_NUM_CLASSES = 10


def check_input_shape(input_shape: object) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints (per sample, no batch dimension)."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    if len(shape) == 0 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be positive ints, got {input_shape!r}")
    return shape


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model: ``builder(input_shape, num_classes)`` -> module."""

    builder: Callable[[tuple[int, ...], int], nn.Module]

    def __post_init__(self) -> None:
        if not callable(self.builder):
            raise ValueError("builder must be callable")


def _cnn(channels: tuple[int, ...]) -> Callable[[tuple[int, ...], int], nn.Module]:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise ValueError(f"a CNN needs square (channels, size, size) inputs, got {input_shape!r}")
        return small_cnn(input_shape[0], num_classes, input_shape[1], channels)
    return build


def _mlp(hidden: tuple[int, ...]) -> Callable[[tuple[int, ...], int], nn.Module]:
    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return mlp(math.prod(input_shape), hidden, num_classes)
    return build


MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "cnn": ModelSpec(_cnn((16, 32))),
        "cnn_large": ModelSpec(_cnn((32, 64))),
        "mlp": ModelSpec(_mlp((200, 200))),
        "mlp_small": ModelSpec(_mlp((64,))),
    }
)


def build_model(name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                num_classes: int = DEFAULT_NUM_CLASSES) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model registered as ``name`` for samples of ``input_shape`` and ``num_classes`` classes;
    return it with its per-sample input shape."""
    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"model {name!r} is unknown; valid names: {', '.join(sorted(MODELS))}")
    input_shape = check_input_shape(input_shape)
    positive_int("num_classes", num_classes)
    return spec.builder(input_shape, num_classes), input_shape
