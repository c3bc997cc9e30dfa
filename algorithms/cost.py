"""Cost models: peak memory (bytes), compute (FLOPs) and payloads (bytes) of the learning algorithms.

Every function reads a :class:`~algorithms.profiling.ModelProfile` measured from a real torch model and
returns a Python ``int``. Notation: P = parameters, Pp = prunable parameters (conv/linear weights), b = bytes
per float element, B = batch size, d = density in (0, 1], nnz = round(d * Pp) kept weights, D = nnz + P - Pp
coordinates a ZO direction covers, F = forward FLOPs per sample, F_bwd = backward FLOPs per sample, S =
saved-activation bytes per sample, X = input bytes per sample, A_train and A_inf = the training (forward and
backward) and inference peaks per sample (see ``profiling`` for all of them and for the kernel rules behind
A_train and A_inf).

The memory figures are peaks of what the local update holds while it runs (weights, gradients, optimizer
slots, the batch, activations, gradient buffers and kernel scratch), checked against torch's CPU allocator on
the real local updates of ``algorithms.local`` and ``algorithms.pruning`` by
``tests/algorithms/test_memory_model.py`` (method and table: ``docs/memory.md``). Not included: the runtime
reserve (interpreter, framework, OS), the client's dataset (in storage, not RAM), and the few bytes per step
of seeds, labels and batch indices.

Sparse storage (only when d < 1; at d == 1 everything is plain dense and carries no mask):

* ``"dense_bitmap"``: a dense tensor holding zeros plus a 1-bit mask over the prunable weights:
  P*b + ceil(Pp/8).
* ``"dense_bool"``: what ``algorithms.local`` holds: a dense tensor holding zeros plus a ``torch.bool`` mask,
  1 byte per coordinate: P*b + P. Its ZO update also keeps the int64 flat index of the D coordinates it
  perturbs (``local.kept_indices``): + 8*D.
* ``"csr"``: the kept weights' values with an int32 index each, biases dense: nnz*(b + 4) + (P - Pp)*b.

Tensors shaped like the parameters (gradients, optimizer slots) share the weights' index: they add values
only (P*b each for the dense formats, (nnz + P - Pp)*b each for ``csr``).

Choices that differ from ``shared/reference/algorithms.md`` section 4, and why:

* Activations are peaks measured layer by layer, not sums: BP charges B*A_train, where A_train is the larger
  of S + X (end of the forward pass) and the backward of each layer (what earlier layers saved plus its
  gradient buffers and oneDNN's copies); on the CNNs a middle conv's backward is the peak, about 23 % above
  S + X. ZO charges B*A_inf = B*(X + the largest layer working set, kernel scratch included): the batch stays
  resident across the 2q forwards, and a conv holds its output twice.
* ZO also charges its direction chunks: ``local`` regenerates u ``ZO_CHUNK`` elements at a time and, to undo
  a perturbation bit for bit, holds u, w + u and (w + u) - u plus a bool flag per element
  ((3b + 1) * chunk bytes; + b for the gathered old values when a mask index selects the coordinates).
  Chunks and activations are never alive together: the peak takes the larger.
* NTK scoring memory is 7Pb + P + B*(S + A_train), not 3Pb + B*S: the score differentiates
  ||f(x; theta*m) - f(x; (theta + eps*z)*m)||^2, so two forward graphs stay alive (the input is shared);
  autograd runs the second graph's backward first, so the first graph's S is alive during it. Parameter-
  sized: theta, the float mask m, theta*m, theta + eps*z, (theta + eps*z)*m (the mask gradient needs theta
  and theta + eps*z, conv/linear save the two products as weights), the gradient of m and the score
  accumulator; + the bool mask. Its FLOPs are
  2*B*(F + F_bwd) per sample r: two forwards and a backward through each.
* BP FLOPs are B*(F + F_bwd), not 3BF: the first layer computes no input gradient (F_bwd < 2F). The
  optimizer's own elementwise arithmetic is not counted (a few FLOPs per parameter per step, which
  ``torch.utils.flop_counter`` does not see either).

FedProx's proximal term (mu/2)||w - w_global||^2 is the local objective's own addition, so it is charged:
the global weights stay alive as the term's anchor (one more parameter-shaped copy), its gradient
mu (w - w_global) is formed one parameter tensor at a time (a temporary of the largest tensor, alive in
the optimizer step, after the activations are freed), and it costs 3 FLOPs per trainable coordinate per
step (the subtraction, then a multiply-add into the gradient).
* ZO axpy passes count 2 FLOPs per element (a multiply-add, as ``torch.utils.flop_counter`` counts conv and
  linear), not 1; and the perturbed dimension includes the biases, which no mask covers.
* Sparse payloads: an update goes up as kept values and biases only (the server sent the mask, so it knows
  it); a model goes down as values plus the bitmap. The table's "dense 4P each way, plus P/8" would ship zeros.
"""

from __future__ import annotations

import math
from types import MappingProxyType

from algorithms import _checks
from algorithms.local import ZO_CHUNK
from algorithms.profiling import INDEX_BYTES, LayerCost, ModelProfile, profile_model

__all__ = [
    "LayerCost", "ModelProfile", "profile_model", "INDEX_BYTES",
    "OPTIMIZER_STATE_SLOTS", "SPARSE_FORMATS", "CSR_INDEX_BYTES", "ZO_INDEX_BYTES", "BOOL_MASK_BYTES",
    "ZO_FIXUP_BYTES", "zo_fixup_bytes",
    "SEED_PAIR_BYTES", "NTK_PARAMETER_COPIES",
    "ZO_PASSES_PER_QUERY", "AXPY_FLOPS_PER_ELEMENT", "RNG_FLOPS_PER_ELEMENT", "NTK_GRAPHS",
    "kept_weights", "parameter_state_bytes", "zo_index_bytes", "zo_chunk_bytes",
    "bp_peak_memory_bytes", "zo_peak_memory_bytes", "ntk_scoring_memory_bytes",
    "sparse_forward_flops_per_sample", "sparse_backward_flops_per_sample", "bp_step_flops",
    "zo_trainable_params", "zo_step_flops", "zo_task_flops", "ntk_scoring_flops",
    "PROXIMAL_FLOPS_PER_ELEMENT", "proximal_peak_memory_bytes", "proximal_step_flops",
    "dense_payload_bytes", "mask_bytes", "sparse_values_bytes", "model_payload_bytes", "score_payload_bytes",
    "seed_pairs_bytes",
]

OPTIMIZER_STATE_SLOTS = MappingProxyType({"sgd": 0, "momentum": 1, "adam": 2})  # parameter-sized buffers
SPARSE_FORMATS = ("dense_bitmap", "dense_bool", "csr")
CSR_INDEX_BYTES = 4  # one int32 column index per kept weight
ZO_INDEX_BYTES = 8  # one int64 flat index per perturbed coordinate (``local.kept_indices``, dense_bool)
BOOL_MASK_BYTES = 1  # torch.bool: one byte per coordinate
ZO_FIXUP_BYTES = 12  # one exact-restore fix-up of ``local.perturb``: int64 index + float32 old value
NTK_PARAMETER_COPIES = 7  # theta, m, theta*m, theta + eps*z, (theta + eps*z)*m, dm, the score sum
SEED_PAIR_BYTES = 8  # an int32 seed and a float32 projected difference
ZO_PASSES_PER_QUERY = 4  # perturb +mu, -2mu, +mu (restore), and the update: each regenerates u and axpys
AXPY_FLOPS_PER_ELEMENT = 2  # theta += c * u: one multiply-add
RNG_FLOPS_PER_ELEMENT = 1  # one generated Gaussian counted as one FLOP (a convention, not a measurement)
NTK_GRAPHS = 2  # the clean and the perturbed forward graph, each differentiated
PROXIMAL_FLOPS_PER_ELEMENT = 3  # d = w - w_global (1), then g += mu * d (a multiply-add, 2)


def _check_profile(profile: object) -> ModelProfile:
    if not isinstance(profile, ModelProfile):
        raise ValueError(f"profile must be a ModelProfile, got {type(profile).__name__}")
    return profile


def _check_density(density: object) -> float:
    return _checks.density("density", density)


def _check_format(sparse_format: object) -> str:
    return _checks.choice("sparse_format", sparse_format, SPARSE_FORMATS)


def kept_weights(profile: ModelProfile, density: float) -> int:
    """nnz = round(density * Pp): prunable weights a mask of this density keeps."""
    return round(_check_density(density) * _check_profile(profile).prunable_params)


def parameter_state_bytes(profile: ModelProfile, copies: int, density: float = 1.0,
                          sparse_format: str = "dense_bitmap") -> int:
    """Bytes of ``copies`` parameter-shaped tensors (weights, gradients, optimizer slots) sharing one index."""
    _check_profile(profile)
    _checks.positive_int("copies", copies)
    density, sparse_format = _check_density(density), _check_format(sparse_format)
    b = profile.bytes_per_element
    if density == 1.0:
        return copies * profile.params * b
    if sparse_format == "dense_bitmap":
        return copies * profile.params * b + mask_bytes(profile)
    if sparse_format == "dense_bool":
        return copies * profile.params * b + BOOL_MASK_BYTES * profile.params
    nnz = kept_weights(profile, density)
    return copies * sparse_values_bytes(profile, density) + nnz * CSR_INDEX_BYTES


def bp_peak_memory_bytes(profile: ModelProfile, batch_size: int, optimizer: str = "sgd",
                         density: float = 1.0, sparse_format: str = "dense_bitmap") -> int:
    """Backprop training peak: weights, gradients and optimizer slots, plus B * A_train, plus what an
    ``NSConv2d`` saves of its standardised weight (``ModelProfile.saved_weight_bytes``, per step; 0 elsewhere).

    A_train (``ModelProfile.training_bytes_per_sample``) is the per-sample peak over the end of the forward
    pass and each layer's backward; on conv nets it sits in a middle conv's backward, where the gradient
    buffers and oneDNN's copies of them come on top of what earlier layers saved.
    """
    _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
    _checks.positive_int("batch_size", batch_size)
    state = parameter_state_bytes(profile, 2 + OPTIMIZER_STATE_SLOTS[optimizer], density, sparse_format)
    return state + batch_size * profile.training_bytes_per_sample + profile.saved_weight_bytes


def proximal_peak_memory_bytes(profile: ModelProfile, batch_size: int, optimizer: str = "sgd",
                               density: float = 1.0, sparse_format: str = "dense_bitmap") -> int:
    """FedProx's backprop peak: ``bp_peak_memory_bytes``' weights, gradients and optimizer slots plus the
    anchor (the global weights, as stored), and the larger of B * A_train (the backward) and L*b, the
    proximal term's temporary w - w_global for the largest parameter tensor (L elements, the optimizer step)."""
    _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
    _checks.positive_int("batch_size", batch_size)
    state = parameter_state_bytes(profile, 3 + OPTIMIZER_STATE_SLOTS[optimizer], density, sparse_format)
    largest_tensor = max((max(layer.prunable_params, layer.params - layer.prunable_params)  # weight or bias
                          for layer in profile.layers), default=0)
    temporary = largest_tensor * profile.bytes_per_element
    return state + max(batch_size * profile.training_bytes_per_sample, temporary) + profile.saved_weight_bytes


def proximal_step_flops(profile: ModelProfile, density: float = 1.0) -> int:
    """The proximal term of one FedProx step: 3 FLOPs per trainable coordinate (``zo_trainable_params``: the
    kept weights and the biases), ``PROXIMAL_FLOPS_PER_ELEMENT``."""
    return PROXIMAL_FLOPS_PER_ELEMENT * zo_trainable_params(profile, density)


def zo_index_bytes(profile: ModelProfile, density: float = 1.0, sparse_format: str = "dense_bitmap") -> int:
    """The int64 index of the D perturbed coordinates that ZO keeps for ``dense_bool`` at d < 1: 8*D; else 0
    (dense needs none; ``csr`` perturbs its value array; a bitmap is read chunk by chunk)."""
    if _check_density(density) == 1.0 or _check_format(sparse_format) != "dense_bool":
        return 0
    return ZO_INDEX_BYTES * zo_trainable_params(profile, density)


def zo_chunk_bytes(profile: ModelProfile, density: float = 1.0, sparse_format: str = "dense_bitmap") -> int:
    """What one direction chunk of n = min(ZO_CHUNK, D) elements holds while ``local.perturb`` runs: u, w + u,
    (w + u) - u and a bool flag each, (3b + 1)*n; + b*n for the gathered old values when a mask over a dense
    tensor selects the coordinates (``dense_bitmap``, ``dense_bool``)."""
    density, sparse_format = _check_density(density), _check_format(sparse_format)
    b = _check_profile(profile).bytes_per_element
    n = min(ZO_CHUNK, zo_trainable_params(profile, density))
    gathered = density < 1.0 and sparse_format != "csr"
    return (3 * b + BOOL_MASK_BYTES + (b if gathered else 0)) * n


def zo_fixup_bytes(profile: ModelProfile, density: float = 1.0, fixup_fraction: float = 0.0) -> int:
    """The exact-restore fix-ups ``local.perturb`` holds through a forward: ceil(f * D) * 12 bytes, where f is
    the fraction of perturbed coordinates whose float round trip w + z - z is not exact. f depends on mu and
    on the weights (about 0.06 at mu = 1e-3 and 0.23 at mu = 1e-2 for torch's default initialisation);
    ``ZerothOrder`` measures it on its own model (``local.fixup_fraction``)."""
    if isinstance(fixup_fraction, bool) or not isinstance(fixup_fraction, (int, float)) \
            or not 0.0 <= fixup_fraction <= 1.0:
        raise ValueError(f"fixup_fraction must be in [0, 1], got {fixup_fraction!r}")
    return math.ceil(fixup_fraction * zo_trainable_params(profile, density)) * ZO_FIXUP_BYTES


def zo_peak_memory_bytes(profile: ModelProfile, batch_size: int, density: float = 1.0,
                         sparse_format: str = "dense_bitmap", fixup_fraction: float = 0.0) -> int:
    """Zeroth-order (seed trick) peak: the weights once (as stored, + ``zo_index_bytes``), the exact-restore
    fix-ups (``zo_fixup_bytes``), the resident batch B*X, and the larger of a forward's working set
    B*(A_inf - X) and one direction chunk (``zo_chunk_bytes``).

    No gradients, no optimizer state, and no stored direction (u is regenerated from its seed).
    """
    _checks.positive_int("batch_size", batch_size)
    weights = parameter_state_bytes(profile, 1, density, sparse_format)
    weights += zo_index_bytes(profile, density, sparse_format)
    weights += zo_fixup_bytes(profile, density, fixup_fraction)
    batch = batch_size * profile.input_bytes_per_sample
    forward = batch_size * profile.inference_bytes_per_sample - batch
    return weights + batch + max(forward, zo_chunk_bytes(profile, density, sparse_format))


def ntk_scoring_memory_bytes(profile: ModelProfile, batch_size: int) -> int:
    """NTK-SAP saliency scoring peak: 7*P*b + L*b + P + B*(S + A_train) (see the module docstring).

    Parameter-sized floats: theta, the float mask m, theta*m, theta + eps*z, (theta + eps*z)*m, the gradient
    of m and the score sum; plus the bool mask (1 byte per coordinate). L is the largest prunable tensor: the
    backward of ``theta * m`` forms each layer's slice of dm as its own tensor before it is accumulated into
    the flat gradient, and the largest slice is alive at the peak. Activations: the first graph's saved
    tensors S stay alive while the second graph's backward reaches its peak A_train (the input batch, shared,
    is in A_train). The masks are dense whatever the current density, so density does not enter.
    """
    _check_profile(profile)
    _checks.positive_int("batch_size", batch_size)
    largest_prunable = max((layer.prunable_params for layer in profile.layers), default=0)
    weights = ((NTK_PARAMETER_COPIES * profile.params + largest_prunable) * profile.bytes_per_element
               + BOOL_MASK_BYTES * profile.params)
    activations = profile.saved_activation_bytes_per_sample + profile.training_bytes_per_sample
    return weights + batch_size * activations


def sparse_forward_flops_per_sample(profile: ModelProfile, density: float = 1.0) -> int:
    """F with prunable layers' FLOPs scaled by density (sparse kernels): round(d * F_prunable) + F_rest."""
    density = _check_density(density)
    prunable = _check_profile(profile).prunable_forward_flops_per_sample
    return round(density * prunable) + profile.forward_flops_per_sample - prunable


def sparse_backward_flops_per_sample(profile: ModelProfile, density: float = 1.0) -> int:
    """F_bwd with prunable layers' FLOPs scaled by density, as ``sparse_forward_flops_per_sample``."""
    density = _check_density(density)
    prunable = _check_profile(profile).prunable_backward_flops_per_sample
    return round(density * prunable) + profile.backward_flops_per_sample - prunable


def bp_step_flops(profile: ModelProfile, batch_size: int, density: float = 1.0) -> int:
    """One backprop step: B * (F_sparse + F_bwd_sparse): forward, then weight and input gradients (the first
    layer has no input gradient, so this is a little under 3 * B * F)."""
    _checks.positive_int("batch_size", batch_size)
    return batch_size * (sparse_forward_flops_per_sample(profile, density)
                         + sparse_backward_flops_per_sample(profile, density))


def zo_trainable_params(profile: ModelProfile, density: float = 1.0) -> int:
    """Coordinates a ZO step perturbs: nnz kept weights plus every non-prunable parameter (biases)."""
    return kept_weights(profile, density) + profile.params - profile.prunable_params


def zo_step_flops(profile: ModelProfile, batch_size: int, queries: int, density: float = 1.0) -> int:
    """One central-difference ZO step: 2*q*B*F_sparse + q*D*4*(2 + 1), D = ``zo_trainable_params``.

    Per query: two loss forwards, and four passes over the D coordinates (+mu, -2mu, +mu, update), each
    regenerating u from its seed (1 FLOP per element) and applying an axpy (2 FLOPs per element).
    """
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("queries", queries)
    forwards = 2 * queries * batch_size * sparse_forward_flops_per_sample(profile, density)
    per_element = ZO_PASSES_PER_QUERY * (AXPY_FLOPS_PER_ELEMENT + RNG_FLOPS_PER_ELEMENT)
    return forwards + queries * zo_trainable_params(profile, density) * per_element


def zo_task_flops(profile: ModelProfile, samples: int, steps: int, queries: int, density: float = 1.0) -> int:
    """``steps`` ZO steps whose batches hold ``samples`` samples in all (an epoch's last batch may be partial):
    ``zo_step_flops`` summed over the steps, 2*q*S*F_sparse + steps*q*D*4*(2 + 1); ``steps *
    zo_step_flops(B)`` when S = steps * B."""
    _checks.positive_int("steps", steps)
    per_element = ZO_PASSES_PER_QUERY * (AXPY_FLOPS_PER_ELEMENT + RNG_FLOPS_PER_ELEMENT)
    return (zo_step_flops(profile, samples, queries, density)
            + (steps - 1) * queries * zo_trainable_params(profile, density) * per_element)


def ntk_scoring_flops(profile: ModelProfile, batch_size: int, samples: int = 1) -> int:
    """NTK-SAP scoring over ``samples`` weight draws of one batch each: samples * 2 * B * (F + F_bwd)
    (dense F: the mask is dense)."""
    _check_profile(profile)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("samples", samples)
    per_graph = profile.forward_flops_per_sample + profile.backward_flops_per_sample
    return samples * NTK_GRAPHS * batch_size * per_graph


def dense_payload_bytes(profile: ModelProfile) -> int:
    """All parameters as dense floats: P*b."""
    return _check_profile(profile).params * profile.bytes_per_element


def mask_bytes(profile: ModelProfile) -> int:
    """A 1-bit mask over the prunable weights: ceil(Pp/8)."""
    return math.ceil(_check_profile(profile).prunable_params / 8)


def sparse_values_bytes(profile: ModelProfile, density: float = 1.0) -> int:
    """Kept weights and all biases as floats in mask order, for a receiver that knows the mask:
    (nnz + P - Pp)*b. Equals P*b at density 1."""
    return zo_trainable_params(profile, density) * profile.bytes_per_element


def model_payload_bytes(profile: ModelProfile, density: float = 1.0) -> int:
    """A model sent to a receiver that may not know the mask: P*b dense, else values plus the bitmap."""
    if _check_density(density) == 1.0:
        return dense_payload_bytes(profile)
    return sparse_values_bytes(profile, density) + mask_bytes(profile)


def score_payload_bytes(profile: ModelProfile) -> int:
    """Saliency scores, one float per prunable weight: Pp*b."""
    return _check_profile(profile).prunable_params * profile.bytes_per_element


def seed_pairs_bytes(queries: int, steps: int) -> int:
    """Seed-trick uplink: one (int32 seed, float32 scalar) pair per query per step: 8*q*steps."""
    return SEED_PAIR_BYTES * _checks.positive_int("queries", queries) * _checks.positive_int("steps", steps)
