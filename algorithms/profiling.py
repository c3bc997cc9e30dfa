"""Profile a torch model layer by layer: parameters, forward FLOPs and what backward keeps alive.

``profile_model`` runs ONE forward pass of a zero batch of size 1 with forward hooks on every leaf module and
reads each layer's real shapes, so every figure is per sample and comes from the model, not a table.

Why a real CPU forward with autograd on (not ``torch.no_grad`` and not the meta device): the saved-tensor rules
below depend on which tensors require grad (autograd saves nothing for an op none of whose inputs requires
grad) and on which outputs are views of their input (``Flatten``); the meta device has no storage identity to
tell views apart, and under ``no_grad`` nothing requires grad. A batch of one costs next to nothing.

Saved-for-backward rules (checked against ``torch.autograd.graph.saved_tensors_hooks`` on CPU, torch 2.13;
``tests/algorithms/test_cost.py`` repeats the check on every model):

* ``Conv*d`` (``ConvolutionBackward0`` saves ``input`` and ``weight``) and ``Linear`` (``AddmmBackward0``
  saves ``mat1`` = input and ``mat2`` = weight.T): the input, when the weight requires grad. The weight
  is a parameter, charged with the parameters, never as an activation.
* ``ReLU`` (``ReluBackward0`` saves ``result``): its output, when its input requires grad.
* ``MaxPool*d`` (``MaxPool2DWithIndicesBackward0`` saves ``self`` and ``result1``): its input, and the int64
  argmax indices, one per output element (``saved_index_bytes`` = 8 per output element, whatever the float
  width), when its input requires grad.
* ``Flatten``, ``Identity``: nothing (``ViewBackward0`` keeps only sizes).

Sharing, and the counting rule we settled on: each distinct storage is charged exactly once. Autograd does
not copy a tensor that two nodes save: ``ReluBackward0.result`` and the next ``MaxPool2DWithIndicesBackward0.self``
(or the next ``Linear``'s ``mat1``) are the same storage, and ``Flatten`` hands ``Linear`` a view of the pool's
output. So a storage is charged to the first layer (in execution order) that saves it and to nobody after.
The model's input batch is also a storage that the first Conv/Linear saves; it is charged once, as the input
batch (``ModelProfile.input_bytes_per_sample``), and not as a saved activation. Hence, for any batch B:

    distinct non-parameter storages saved (saved_tensors_hooks)
        == B * (saved_activation_bytes_per_sample + input_bytes_per_sample)

whenever the first layer saves its input (every model in ``models.MODELS``). The table in
``shared/reference/algorithms.md`` sums ``a_l`` per layer, which would count the ReLU output twice (ReLU and
MaxPool both save it) and the input twice (as input and as the first layer's saved input): real torch does not.

``io_elems`` is input + output elements, with the output counted 0 when it is a view of the input
(``Flatten``), since no new storage is allocated.

Working sets: what a layer's kernels hold while they run, beyond the saved tensors. Measured with the torch CPU
allocator (``algorithms.memory_probe``, torch 2.13 with oneDNN on x86; ``tests/algorithms/test_memory_model.py``
checks whole local updates against them). in and out are the layer's input and output elements per sample:

* ``forward_elems`` (a forward without autograd, as ZO runs it): the input (0 when it is the model's input
  batch, which is charged apart), the output (0 for a view) and kernel scratch. ``Conv*d`` adds
  max(in, out): oneDNN computes into a blocked-layout buffer and reorders it into the plain output (and
  reorders a many-channel input first), so the output or the input exists twice. ``MaxPool*d`` computes its
  int64 argmax indices even without autograd: ``forward_index_bytes`` = 8 per output element.
* ``backward_elems`` (0 when nothing in the layer requires grad): the gradient of its output and, when its
  input requires grad, the gradient of its input (for ReLU both are out-sized, for a pool out + in).
  ``Conv*d`` adds a copy of the output gradient and a copy of its input (oneDNN's blocked layouts for the
  weight gradient): 2*out + in, + in for the input gradient. Parameter gradients are parameter-sized and
  charged with the parameters, never here.

The training peak (``training_bytes_per_sample``) is then the larger of the end of the forward pass (every
saved tensor alive: S + X) and, for each layer l, its backward: X plus what layers 1..l saved (the saved
storages charged to later layers were released when their backward ran) plus ``backward_elems`` of l. With
conv layers the backward of a middle layer is the peak (oneDNN's copies), not the end of the forward pass.

FLOPs follow ``torch.utils.flop_counter``: a multiply-add is 2 FLOPs, bias adds are excluded; conv:
2 * Cin/groups * prod(kernel) * Cout * prod(out spatial); linear: 2 * in * out; ReLU, pool, flatten: 0.
``backward_flops`` is the forward figure once for the weight gradient (when the weight requires grad) and once
for the input gradient (when the input requires grad): the first layer computes no input gradient, so a
backward step is not exactly 2F. A layer kind without a rule raises ``ValueError`` naming it rather than
being silently costed as free.

The layers the newer models add (``models.py``):

* ``NSConv2d``: the conv rule, plus ``saved_weight_bytes``: its weight standardisation saves, per step and
  whatever the batch, three weight-sized float tensors (the centred, the scaled and the standardised kernel),
  a weight-sized bool mask (``w != 0``) and two per-filter float vectors (mean and denominator), when the weight
  requires grad (only the standardised kernel when just the input does). These are not per sample, so they
  sit apart from ``saved_activation_bytes_per_sample``. The standardisation's own FLOPs (a few per weight per
  step) are not counted, as ``flop_counter`` does not count them.
* ``AdaptiveAvgPool2d`` to 1x1 (global average pool): torch runs it as a mean, which saves nothing; its
  backward expands the output gradient to the input's size (in + out elements). 0 FLOPs (flop_counter).
* ``ResidualAdd`` (a residual sum, two inputs): saves nothing; forward holds both inputs and the sum; its
  backward hands the one output gradient to both branches (out elements). 0 FLOPs, as ``flop_counter`` counts
  no elementwise op (bias adds are excluded too). The block input that the main branch and the projection
  both save is one storage, charged once by the rule above.
* A tensor read by several layers (a block input): autograd sums one gradient per reader, and the one from
  the reader whose backward runs first (the last in forward order) stays alive while the other branch's
  backward runs, so the layers from the first reader up to the last get that tensor's size added to their
  ``backward_elems``. The measured error on ``resnet_small``: ``docs/autoprune.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import nn

from algorithms._checks import non_negative_int, positive_int
from algorithms.base import TaskConfig
from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES, ResidualAdd, build_model, check_architecture
from algorithms.nsconv import NSConv2d

__all__ = ["LayerCost", "ModelProfile", "profile_model", "profile_named_model", "INDEX_BYTES"]

INDEX_BYTES = 8  # MaxPool argmax indices are int64
# oneDNN's blocked conv layouts (nChw8c) pad channels to a multiple of 8 on AVX2, the reference platform
# (16 on AVX-512). A constant, not the host's value, so that demand, and the event log, is the same everywhere.
ONEDNN_CHANNEL_BLOCK = 8

_CONV = nn.modules.conv._ConvNd
_POOL = nn.modules.pooling._MaxPoolNd
_VIEW_ONLY = (nn.Flatten, nn.Identity)
_BOOL_BYTES = 1


@dataclass(frozen=True)
class LayerCost:
    """Per-sample cost of one leaf layer (all counts per sample, i.e. at batch size 1)."""

    name: str  # module path inside the model, e.g. "3"
    kind: str  # module class name, e.g. "Conv2d"
    params: int  # parameters owned by this layer (weights + bias)
    prunable_params: int  # conv/linear weights only (not biases, not norms)
    forward_flops: int  # 2 per multiply-add, bias adds excluded (torch.utils.flop_counter convention)
    saved_activation_elems: int  # float elements this layer keeps for backward, distinct storages only
    saved_index_bytes: int  # extra bytes kept for backward (MaxPool int64 indices)
    io_elems: int  # input + output elements (output 0 when it is a view of the input)
    backward_flops: int  # weight- and input-gradient FLOPs (flop_counter convention; see module docstring)
    forward_elems: int  # float elements its forward holds without autograd, model input excluded
    forward_index_bytes: int  # int64 bytes its forward holds without autograd (MaxPool argmax)
    backward_elems: int  # float elements of gradient buffers (and kernel copies) its backward holds
    saved_weight_bytes: int = 0  # bytes saved per step that derive from the weights, not the batch (NSConv2d)

    def __post_init__(self) -> None:
        for field in ("params", "prunable_params", "forward_flops", "saved_activation_elems",
                      "saved_index_bytes", "io_elems", "backward_flops", "forward_elems",
                      "forward_index_bytes", "backward_elems", "saved_weight_bytes"):
            non_negative_int(f"LayerCost.{field}", getattr(self, field))
        if self.prunable_params > self.params:
            raise ValueError("LayerCost.prunable_params must not exceed params")


@dataclass(frozen=True)
class ModelProfile:
    """A model's layers in execution order, its per-sample input shape and its float width in bytes."""

    layers: tuple[LayerCost, ...]
    input_shape: tuple[int, ...]
    bytes_per_element: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.layers, tuple) or not all(isinstance(l, LayerCost) for l in self.layers):
            raise ValueError("ModelProfile.layers must be a tuple of LayerCost")
        if len(self.input_shape) == 0 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.input_shape
        ):
            raise ValueError(f"ModelProfile.input_shape must be positive ints, got {self.input_shape!r}")
        positive_int("ModelProfile.bytes_per_element", self.bytes_per_element)

    @property
    def params(self) -> int:
        """All parameters P (weights and biases)."""
        return sum(l.params for l in self.layers)

    @property
    def prunable_params(self) -> int:
        """Conv/linear weights: the coordinates a mask covers."""
        return sum(l.prunable_params for l in self.layers)

    @property
    def forward_flops_per_sample(self) -> int:
        """F: forward FLOPs of one sample."""
        return sum(l.forward_flops for l in self.layers)

    @property
    def prunable_forward_flops_per_sample(self) -> int:
        """The part of F done by layers with prunable weights (what unstructured sparsity can shrink)."""
        return sum(l.forward_flops for l in self.layers if l.prunable_params)

    @property
    def input_bytes_per_sample(self) -> int:
        """Bytes of one input sample (the batch itself stays resident while a step runs)."""
        return math.prod(self.input_shape) * self.bytes_per_element

    @property
    def saved_activation_bytes_per_sample(self) -> int:
        """Bytes backward keeps alive per sample, excluding the input batch (see module docstring)."""
        elems = sum(l.saved_activation_elems for l in self.layers)
        return elems * self.bytes_per_element + sum(l.saved_index_bytes for l in self.layers)

    @property
    def saved_weight_bytes(self) -> int:
        """Bytes backward keeps alive per step whatever the batch (NSConv2d's standardised kernels)."""
        return sum(l.saved_weight_bytes for l in self.layers)

    @property
    def max_io_bytes_per_sample(self) -> int:
        """The largest input + output of any one layer, in bytes per sample (no kernel scratch)."""
        return max((l.io_elems for l in self.layers), default=0) * self.bytes_per_element

    @property
    def backward_flops_per_sample(self) -> int:
        """Backward FLOPs of one sample: weight and input gradients (< 2F: the first layer has no input grad)."""
        return sum(l.backward_flops for l in self.layers)

    @property
    def prunable_backward_flops_per_sample(self) -> int:
        """The part of the backward FLOPs done by layers with prunable weights."""
        return sum(l.backward_flops for l in self.layers if l.prunable_params)

    @property
    def inference_bytes_per_sample(self) -> int:
        """Peak bytes per sample of a forward without autograd: the input plus the largest layer working set."""
        b = self.bytes_per_element
        largest = max((l.forward_elems * b + l.forward_index_bytes for l in self.layers), default=0)
        return self.input_bytes_per_sample + largest

    @property
    def training_bytes_per_sample(self) -> int:
        """Peak bytes per sample of a forward and backward pass (see the module docstring): the larger of
        S + X (end of the forward) and, over layers l, X + saved by layers 1..l + l's backward working set."""
        b = self.bytes_per_element
        alive = peak = self.input_bytes_per_sample
        for layer in self.layers:
            alive += layer.saved_activation_elems * b + layer.saved_index_bytes
            peak = max(peak, alive + layer.backward_elems * b)
        return max(peak, alive)


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _blocked(tensor: torch.Tensor, channels: int) -> int:
    """Elements of ``tensor`` (N, C, spatial...) in oneDNN's blocked layout: C rounded up to a multiple of
    ``ONEDNN_CHANNEL_BLOCK``."""
    return tensor.numel() // channels * (-(-channels // ONEDNN_CHANNEL_BLOCK) * ONEDNN_CHANNEL_BLOCK)


def _layer_cost(name: str, module: nn.Module, inp: torch.Tensor, out: torch.Tensor,
                seen: set[int], input_key: int) -> LayerCost:
    """Apply the module docstring's rules to one call; ``seen`` holds storages already charged and
    ``input_key`` is the storage of the model's input batch."""
    params = sum(p.numel() for p in module.parameters(recurse=False))
    n_in, n_out = inp.numel(), out.numel()
    fresh_out = 0 if _storage_key(out) == _storage_key(inp) else n_out
    resident_in = 0 if _storage_key(inp) == input_key else n_in
    prunable = flops = backward_flops = index_bytes = forward_index_bytes = backward_elems = weight_bytes = 0
    forward_elems = resident_in + fresh_out
    saved: list[torch.Tensor] = []
    if isinstance(module, (_CONV, nn.Linear)):
        if isinstance(module, _CONV) and module.transposed:
            raise ValueError(f"model: layer {name!r} of kind {type(module).__name__} has no cost rule")
        conv = isinstance(module, _CONV)
        prunable = module.weight.numel()
        if conv:
            per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
            flops = 2 * per_output * n_out
            forward_elems += max(_blocked(inp, module.in_channels), _blocked(out, module.out_channels))
        else:
            flops = 2 * module.in_features * n_out
        weight_grad, input_grad = module.weight.requires_grad, inp.requires_grad
        backward_flops = flops * (int(weight_grad) + int(input_grad))
        if weight_grad or input_grad:
            backward_elems = n_out + (n_in if input_grad else 0)
            if conv:  # oneDNN copies the output gradient, and the input for the weight gradient
                backward_elems += _blocked(out, module.out_channels) + (
                    _blocked(inp, module.in_channels) if weight_grad else 0)
        if weight_grad:
            saved.append(inp)
        if isinstance(module, NSConv2d):
            weight_bytes = _ns_saved_weight_bytes(module, weight_grad, input_grad)
    elif isinstance(module, nn.AdaptiveAvgPool2d) and tuple(out.shape[2:]) == (1, 1):
        if inp.requires_grad:  # a mean: saves sizes only; its backward expands the gradient to the input
            backward_elems = n_in + n_out
    elif isinstance(module, nn.ReLU):
        if inp.requires_grad:
            saved.append(out)
            backward_elems = 2 * n_out
    elif isinstance(module, _POOL):
        forward_index_bytes = INDEX_BYTES * n_out
        if inp.requires_grad:
            saved.append(inp)
            index_bytes = INDEX_BYTES * n_out
            backward_elems = n_out + n_in
    elif not isinstance(module, _VIEW_ONLY):
        raise ValueError(f"model: layer {name!r} of kind {type(module).__name__} has no cost rule")
    saved_elems = 0
    for tensor in saved:
        key = _storage_key(tensor)
        if key not in seen:
            seen.add(key)
            saved_elems += tensor.numel()
    return LayerCost(name, type(module).__name__, params, prunable, flops, saved_elems, index_bytes,
                     n_in + fresh_out, backward_flops, forward_elems, forward_index_bytes, backward_elems,
                     weight_bytes)


def _hold_fork_gradients(layers: list[LayerCost], readers: dict[int, tuple[int, list[int]]]) -> tuple:
    """A tensor read by several layers (a residual block's input: its first conv and its projection) gets
    one gradient per reader, summed: the gradient from the last reader (whose backward runs first) is held
    while the backward of the earlier readers' branch runs. Add it to the backward working set of the
    layers from the first reader up to, not including, the last."""
    layers = list(layers)
    for elems, order in readers.values():
        for i in range(order[0], order[-1]):
            layers[i] = replace(layers[i], backward_elems=layers[i].backward_elems + elems)
    return tuple(layers)


def _ns_saved_weight_bytes(module: NSConv2d, weight_grad: bool, input_grad: bool) -> int:
    """What ``nsconv.standardised_weight`` and the conv save per step (module docstring), in bytes."""
    b = module.weight.element_size()
    elems, filters = module.weight.numel(), module.out_channels
    if weight_grad:
        return (3 * elems + 2 * filters) * b + elems * _BOOL_BYTES
    return elems * b if input_grad else 0


def _add_cost(name: str, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> LayerCost:
    """A ``ResidualAdd``: saves nothing, 0 FLOPs; forward holds both inputs and the sum, backward passes the
    output gradient to both branches (module docstring)."""
    if a.shape != b.shape or out.shape != a.shape:
        raise ValueError(f"model: residual sum {name!r} of unequal shapes {tuple(a.shape)}, {tuple(b.shape)}")
    n = out.numel()
    backward_elems = n if (a.requires_grad or b.requires_grad) else 0
    return LayerCost(name, "ResidualAdd", 0, 0, 0, 0, 0, 3 * n, 0, 3 * n, 0, backward_elems)


def profile_model(model: nn.Module, input_shape: tuple[int, ...], bytes_per_element: int = 4) -> ModelProfile:
    """Profile ``model`` on a zero batch of one sample shaped ``input_shape`` (no batch dimension).

    The model is not modified (its parameters, buffers and train/eval mode are left as they are). Raises
    ``ValueError`` naming the layer if a leaf module has no cost rule, is called twice, or if parameters sit
    outside leaf modules.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) == 0 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                    for d in input_shape):
        raise ValueError(f"input_shape must be positive ints, got {input_shape!r}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)

    input_key = _storage_key(x)
    seen: set[int] = {input_key}  # the input batch is charged as input, never as an activation
    layers: list[LayerCost] = []
    called: set[str] = set()
    keep_alive: list[torch.Tensor] = []  # no storage may be freed and reused while keys are compared
    readers: dict[int, tuple[int, list[int]]] = {}  # storage -> (elements, layers reading it, in order)

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, out: object) -> None:
            if name in called:
                raise ValueError(f"model: layer {name!r} is called more than once; reuse is not costed")
            called.add(name)
            arity = 2 if isinstance(module, ResidualAdd) else 1
            if len(args) != arity or not all(isinstance(a, torch.Tensor) for a in args) or not isinstance(
                    out, torch.Tensor):
                raise ValueError(f"model: layer {name!r} must take {arity} tensor(s) and return one")
            keep_alive.extend((*args, out))
            if not isinstance(module, _VIEW_ONLY):
                for arg in args:
                    if arg.requires_grad:
                        readers.setdefault(_storage_key(arg), (arg.numel(), []))[1].append(len(layers))
            if arity == 2:
                layers.append(_add_cost(name, *args, out))
            else:
                layers.append(_layer_cost(name, module, args[0], out, seen, input_key))
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves]
    try:
        with torch.enable_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()

    profile = ModelProfile(_hold_fork_gradients(layers, readers), input_shape, bytes_per_element)
    total = sum(p.numel() for p in model.parameters())
    if profile.params != total:
        raise ValueError(f"model: {total - profile.params} parameters sit outside costed leaf layers")
    return profile


def profile_named_model(name: str, input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                        num_classes: int = DEFAULT_NUM_CLASSES, bytes_per_element: int = 4,
                        architecture: tuple[int, ...] = ()) -> ModelProfile:
    """The profile of ``models.MODELS[name]`` built for ``input_shape``, ``num_classes`` and the hidden
    widths ``architecture`` (``()``: the registered ones), computed once per process (profiles are immutable,
    and a model's shapes do not depend on its random initialisation). Unknown names raise ``ValueError``."""
    return _profile_named(name, tuple(input_shape), num_classes, bytes_per_element,
                          check_architecture(name, architecture))


@lru_cache(maxsize=None)
def _profile_named(name: str, input_shape: tuple[int, ...], num_classes: int, bytes_per_element: int,
                   architecture: tuple[int, ...]) -> ModelProfile:
    model, input_shape = build_model(name, input_shape, num_classes, architecture)
    return profile_model(model, input_shape, bytes_per_element)


class ProfiledModel:
    """Mixin for an algorithm that trains the named model ``self.model`` every round.

    Gives the model's cost ``profile`` (measured on first use, kept) and the default round plan:
    ``local_steps`` steps of ``batch_size`` in phase ``'train'``. Subclasses set ``model``,
    ``local_steps`` and ``batch_size`` and ``_profile = None`` in ``__init__``.
    """

    model: str
    local_steps: int
    batch_size: int
    input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
    num_classes: int = DEFAULT_NUM_CLASSES
    _profile: "ModelProfile | None"

    @property
    def profile(self) -> ModelProfile:
        """The model's cost profile (its registered architecture), measured on first use and kept."""
        if self._profile is None:
            self._profile = profile_named_model(self.model, tuple(self.input_shape), self.num_classes)
        return self._profile

    def profile_for(self, architecture: tuple[int, ...] = ()) -> ModelProfile:
        """The cost profile of the model with hidden widths ``architecture`` (``()``: ``profile``), measured
        once per architecture and process."""
        if tuple(architecture) == ():
            return self.profile
        return profile_named_model(self.model, tuple(self.input_shape), self.num_classes,
                                   architecture=tuple(architecture))

    def task(self, round_index: int, state: object = None) -> TaskConfig:
        """Every round, whatever the state: ``local_steps`` training steps of ``batch_size``."""
        non_negative_int("round_index", round_index)
        return TaskConfig("train", self.local_steps, self.batch_size)
