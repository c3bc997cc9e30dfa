"""The model zoo: small torch networks sized for AIoT devices, named for scenarios.

Contract
--------
* Builders make fresh networks with torch's default initialisation (seed torch's generator, or re-initialise,
  if you need identical weights).
* ``MODELS`` maps a scenario name to a :class:`ModelSpec`: a builder taking the shape of one input sample
  (no batch dimension, e.g. ``(1, 28, 28)`` for a grey 28x28 image), the number of classes and an
  architecture, and the model's registered architecture.
* An **architecture** is the tuple of widths of the model's prunable hidden layers, in forward order: conv
  output filters, hidden linear units; the classifier is never pruned. ``()`` means the registered widths
  (``default_architecture(name)``). Structured pruning (``algorithms.autoprune``) shrinks it.
* ``build_model(name, input_shape, num_classes, architecture=())`` returns ``(module, input_shape)``; the
  defaults are Fashion-MNIST's ``(1, 28, 28)`` and 10 classes. An unknown name raises ``ValueError`` listing
  the valid ones. Every model except ``resnet_small`` is an ``nn.Sequential`` of leaf layers;
  ``resnet_small``'s leaves are still called once each, in forward order (its residual sums are the leaf
  ``ResidualAdd``), so the cost profile reads its layers in order.

All networks end in raw logits (no softmax): the loss function owns the softmax.

The models (architecture in brackets):

* ``cnn`` (16, 32), ``cnn_large`` (32, 64): per stage Conv3x3 -> ReLU -> MaxPool2, Flatten, Linear.
* ``cnn_ns`` (16, 32): ``cnn`` with ``nsconv.NSConv2d`` (BN-free normalised conv, FedMef's conv option).
* ``cnn_femnist`` (32, 64): the FEMNIST CNN of the automatic structured pruning paper's code: Conv5x5 32 ->
  ReLU -> MaxPool2 -> Conv5x5 64 -> ReLU -> MaxPool2 -> global average pool -> Linear. Padding 2 (size
  kept) so 8x8 digits fit; the authors' Keras code pads 'valid' (same parameters, fewer FLOPs at 28x28).
* ``cnn_femnist_ns`` (32, 64): the same with ``NSConv2d``.
* ``resnet_small`` (16, 32, 64): BN-free; stem Conv3x3 16 -> ReLU, then two residual blocks of widths 32 and
  64: ReLU(Conv3x3 stride 2 -> ReLU -> Conv3x3  +  Conv1x1 stride 2 projection). A block's two convs and its
  projection share ONE width (one architecture entry per block), so pruning a block's filters prunes all
  three together. Then global average pool, Linear.
* ``mlp`` (200, 200), ``mlp_small`` (64,): Flatten, Linear -> ReLU per hidden width, Linear.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

import torch
from torch import nn

from algorithms._checks import positive_int
from algorithms.nsconv import NSConv2d

__all__ = ["ModelSpec", "MODELS", "small_cnn", "femnist_cnn", "mlp", "ResNetSmall", "ResidualBlock",
           "ResidualAdd", "build_model", "check_input_shape", "default_architecture", "check_architecture",
           "DEFAULT_INPUT_SHAPE", "DEFAULT_NUM_CLASSES"]


def small_cnn(
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int = 28,
    channels: tuple[int, ...] = (16, 32),
    conv: type[nn.Conv2d] = nn.Conv2d,
) -> nn.Sequential:
    """A plain CNN: per stage Conv3x3 (padding 1) -> ReLU -> MaxPool2, then Flatten -> Linear.

    Each stage halves the spatial size (floor), so ``image_size`` must stay >= 1 after every stage.
    ``conv`` is the convolution class (``nn.Conv2d`` or ``NSConv2d``).
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
        layers += [conv(previous, width, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        size //= 2
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} pooling stages")
        previous = width
    layers += [nn.Flatten(), nn.Linear(previous * size * size, num_classes)]
    return nn.Sequential(*layers)


def femnist_cnn(in_channels: int = 1, num_classes: int = 62, image_size: int = 28,
                channels: tuple[int, ...] = (32, 64), conv: type[nn.Conv2d] = nn.Conv2d) -> nn.Sequential:
    """Per stage Conv5x5 (padding 2) -> ReLU -> MaxPool2, then global average pool -> Flatten -> Linear.

    ``image_size`` must stay >= 1 after every pooling stage. Output: ``(batch, num_classes)`` logits.
    """
    positive_int("in_channels", in_channels)
    positive_int("num_classes", num_classes)
    positive_int("image_size", image_size)
    if len(channels) == 0:
        raise ValueError("channels must name at least one stage")
    if image_size >> len(channels) < 1:
        raise ValueError(f"image_size {image_size} is too small for {len(channels)} pooling stages")
    layers: list[nn.Module] = []
    previous = in_channels
    for width in channels:
        positive_int("channels", width)
        layers += [conv(previous, width, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
        previous = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, num_classes)]
    return nn.Sequential(*layers)


class ResidualAdd(nn.Module):
    """``a + b`` as a leaf module, so the cost profile sees a residual sum as a layer of its own."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class ResidualBlock(nn.Module):
    """ReLU(conv2(ReLU(conv1(x))) + proj(x)): conv1 3x3 with ``stride``, conv2 3x3, proj 1x1 with ``stride``;
    all three have ``width`` output filters (tied: the sum needs equal channels)."""

    def __init__(self, in_channels: int, width: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.proj = nn.Conv2d(in_channels, width, 1, stride=stride)
        self.add = ResidualAdd()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.conv2(self.relu1(self.conv1(x)))
        return self.relu2(self.add(main, self.proj(x)))


class ResNetSmall(nn.Module):
    """BN-free small ResNet: stem Conv3x3 (``widths[0]``) -> ReLU, one ``ResidualBlock`` (stride 2) per
    further width, global average pool, Linear. ``image_size`` must stay >= 1 after the strided blocks."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        positive_int("in_channels", in_channels)
        positive_int("num_classes", num_classes)
        positive_int("image_size", image_size)
        if len(widths) < 2:
            raise ValueError("widths must name the stem and at least one block")
        for width in widths:
            positive_int("widths", width)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.stem_relu = nn.ReLU()
        self.blocks = nn.Sequential(*(ResidualBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_relu(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


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


Builder = Callable[[tuple[int, ...], int, tuple[int, ...]], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model: ``builder(input_shape, num_classes, architecture)`` -> module, and
    ``architecture``, its registered widths of prunable hidden layers."""

    builder: Builder
    architecture: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not callable(self.builder):
            raise ValueError("builder must be callable")


def _square(input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"a CNN needs square (channels, size, size) inputs, got {input_shape!r}")
    return input_shape[0], input_shape[1]


def _cnn(conv: type[nn.Conv2d] = nn.Conv2d) -> Builder:
    def build(input_shape: tuple[int, ...], num_classes: int, architecture: tuple[int, ...]) -> nn.Module:
        channels, size = _square(input_shape)
        return small_cnn(channels, num_classes, size, architecture, conv)
    return build


def _femnist(conv: type[nn.Conv2d] = nn.Conv2d) -> Builder:
    def build(input_shape: tuple[int, ...], num_classes: int, architecture: tuple[int, ...]) -> nn.Module:
        channels, size = _square(input_shape)
        return femnist_cnn(channels, num_classes, size, architecture, conv)
    return build


def _resnet(input_shape: tuple[int, ...], num_classes: int, architecture: tuple[int, ...]) -> nn.Module:
    channels, size = _square(input_shape)
    return ResNetSmall(channels, num_classes, size, architecture)


def _mlp(input_shape: tuple[int, ...], num_classes: int, architecture: tuple[int, ...]) -> nn.Module:
    return mlp(math.prod(input_shape), architecture, num_classes)


MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "cnn": ModelSpec(_cnn(), (16, 32)),
        "cnn_large": ModelSpec(_cnn(), (32, 64)),
        "cnn_ns": ModelSpec(_cnn(NSConv2d), (16, 32)),
        "cnn_femnist": ModelSpec(_femnist(), (32, 64)),
        "cnn_femnist_ns": ModelSpec(_femnist(NSConv2d), (32, 64)),
        "resnet_small": ModelSpec(_resnet, (16, 32, 64)),
        "mlp": ModelSpec(_mlp, (200, 200)),
        "mlp_small": ModelSpec(_mlp, (64,)),
    }
)


def _spec(name: object) -> ModelSpec:
    spec = MODELS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"model {name!r} is unknown; valid names: {', '.join(sorted(MODELS))}")
    return spec


def default_architecture(name: str) -> tuple[int, ...]:
    """The registered widths of model ``name``'s prunable hidden layers; unknown names raise ValueError."""
    return _spec(name).architecture


def check_architecture(name: str, architecture: object) -> tuple[int, ...]:
    """``architecture`` for model ``name`` as a tuple of positive ints, ``()`` replaced by the registered
    widths; ``ValueError`` unless it has one width per prunable hidden layer."""
    default = default_architecture(name)
    widths = tuple(architecture) if isinstance(architecture, (tuple, list)) else None
    if widths == ():
        return default
    if widths is None or len(widths) != len(default) or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"architecture of {name!r} must be {len(default)} positive ints (as {default}), "
                         f"got {architecture!r}")
    return widths


def build_model(name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                num_classes: int = DEFAULT_NUM_CLASSES,
                architecture: tuple[int, ...] = ()) -> tuple[nn.Module, tuple[int, ...]]:
    """Build the model registered as ``name`` for samples of ``input_shape`` and ``num_classes`` classes,
    with the hidden widths ``architecture`` (``()``: the registered ones); return it with its per-sample
    input shape."""
    spec = _spec(name)
    input_shape = check_input_shape(input_shape)
    positive_int("num_classes", num_classes)
    widths = check_architecture(name, architecture)
    return spec.builder(input_shape, num_classes, widths), input_shape
