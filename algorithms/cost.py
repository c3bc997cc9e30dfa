"""Cost models: peak memory (bytes), compute (FLOPs) and payloads (bytes) of the learning algorithms.

Every function reads a :class:`~algorithms.profiling.ModelProfile` measured from a real torch model and
returns a Python ``int``. Notation: P = parameters, Pp = prunable parameters (conv/linear weights), b = bytes
per float element, B = batch size, d = density in (0, 1], nnz = round(d * Pp) kept weights, F = forward FLOPs
per sample, S = saved-activation bytes per sample, X = input bytes per sample (see ``profiling`` for S and why
the input is charged apart from it).

Sparse storage (only when d < 1; at d == 1 everything is plain dense and carries no mask):

* ``"dense_bitmap"``: a dense tensor holding zeros plus a 1-bit mask over the prunable weights:
  P*b + ceil(Pp/8).
* ``"csr"``: the kept weights' values with an int32 index each, biases dense: nnz*(b + 4) + (P - Pp)*b.

Tensors shaped like the parameters (gradients, optimizer slots) share the weights' index: they add values
only (P*b each for ``dense_bitmap``, (nnz + P - Pp)*b each for ``csr``).

Choices that differ from ``shared/reference/algorithms.md`` section 4, and why:

* NTK scoring memory is (2P + 4Pp)*b + B*(2S + X), not 3Pb + B*S: the score differentiates
  ||f(x; theta*m) - f(x; (theta + eps*z)*m)||^2, so two forward graphs stay alive (the input is shared), and
  besides theta, the mask and its gradient, autograd keeps the perturbed weights and both masked weight
  products (measured with ``saved_tensors_hooks``; see the tests). Its FLOPs are 6*B*F per sample r: two
  forwards and a backward through each (2F per graph: input and weight gradients).
* ZO axpy passes count 2 FLOPs per element (a multiply-add, as ``torch.utils.flop_counter`` counts conv and
  linear), not 1; and the perturbed dimension includes the biases, which no mask covers.
* Sparse payloads: an update goes up as kept values and biases only (the server sent the mask, so it knows
  it); a model goes down as values plus the bitmap. The table's "dense 4P each way, plus P/8" would ship zeros.
* The BP formula P*b*(2 + s) + B*S + B*X charges the input batch once: S excludes it (see ``profiling``).
"""

from __future__ import annotations

import math
from types import MappingProxyType

from algorithms import _checks
from algorithms.profiling import INDEX_BYTES, LayerCost, ModelProfile, profile_model

__all__ = [
    "LayerCost", "ModelProfile", "profile_model", "INDEX_BYTES",
    "OPTIMIZER_STATE_SLOTS", "SPARSE_FORMATS", "CSR_INDEX_BYTES", "SEED_PAIR_BYTES",
    "ZO_PASSES_PER_QUERY", "AXPY_FLOPS_PER_ELEMENT", "RNG_FLOPS_PER_ELEMENT", "NTK_FLOPS_PER_FORWARD_FLOP",
    "kept_weights", "parameter_state_bytes",
    "bp_peak_memory_bytes", "zo_peak_memory_bytes", "ntk_scoring_memory_bytes",
    "sparse_forward_flops_per_sample", "bp_step_flops", "zo_trainable_params", "zo_step_flops",
    "ntk_scoring_flops",
    "dense_payload_bytes", "mask_bytes", "sparse_values_bytes", "model_payload_bytes", "score_payload_bytes",
    "seed_pairs_bytes",
]

OPTIMIZER_STATE_SLOTS = MappingProxyType({"sgd": 0, "momentum": 1, "adam": 2})  # parameter-sized buffers
SPARSE_FORMATS = ("dense_bitmap", "csr")
CSR_INDEX_BYTES = 4  # one int32 column index per kept weight
SEED_PAIR_BYTES = 8  # an int32 seed and a float32 projected difference
ZO_PASSES_PER_QUERY = 4  # perturb +mu, -2mu, +mu (restore), and the update: each regenerates u and axpys
AXPY_FLOPS_PER_ELEMENT = 2  # theta += c * u: one multiply-add
RNG_FLOPS_PER_ELEMENT = 1  # one generated Gaussian counted as one FLOP (a convention, not a measurement)
NTK_FLOPS_PER_FORWARD_FLOP = 6  # two forwards (2F) + backward through both graphs (2 * 2F)


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
    nnz = kept_weights(profile, density)
    return copies * sparse_values_bytes(profile, density) + nnz * CSR_INDEX_BYTES


def bp_peak_memory_bytes(profile: ModelProfile, batch_size: int, optimizer: str = "sgd",
                         density: float = 1.0, sparse_format: str = "dense_bitmap") -> int:
    """Backprop training peak: weights, gradients and optimizer slots, plus B*(S + X).

    The peak sits at the end of the forward pass, when every saved activation is alive. Transient gradient
    buffers of one layer during backward (at most B * max_io) are not charged: by then earlier saved tensors
    are being freed.
    """
    _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
    _checks.positive_int("batch_size", batch_size)
    state = parameter_state_bytes(profile, 2 + OPTIMIZER_STATE_SLOTS[optimizer], density, sparse_format)
    return state + batch_size * (profile.saved_activation_bytes_per_sample + profile.input_bytes_per_sample)


def zo_peak_memory_bytes(profile: ModelProfile, batch_size: int, density: float = 1.0,
                         sparse_format: str = "dense_bitmap") -> int:
    """Zeroth-order (seed trick) peak, inference level: the weights once plus B * max_io.

    No gradients, no optimizer state, and no stored direction (u is regenerated from its seed).
    """
    _checks.positive_int("batch_size", batch_size)
    weights = parameter_state_bytes(profile, 1, density, sparse_format)
    return weights + batch_size * profile.max_io_bytes_per_sample


def ntk_scoring_memory_bytes(profile: ModelProfile, batch_size: int) -> int:
    """NTK-SAP saliency scoring peak: (2P + 4Pp)*b + B*(2S + X) (see the module docstring).

    Parameter-sized: theta, theta + eps*z, the mask, its gradient, and the two masked weight products
    saved by conv/linear backward. Activations: two forward graphs sharing the input batch. The mask is
    a dense float tensor whatever the current density, so density does not enter.
    """
    _check_profile(profile)
    _checks.positive_int("batch_size", batch_size)
    b = profile.bytes_per_element
    weights = (2 * profile.params + 4 * profile.prunable_params) * b
    activations = 2 * profile.saved_activation_bytes_per_sample + profile.input_bytes_per_sample
    return weights + batch_size * activations


def sparse_forward_flops_per_sample(profile: ModelProfile, density: float = 1.0) -> int:
    """F with prunable layers' FLOPs scaled by density (sparse kernels): round(d * F_prunable) + F_rest."""
    density = _check_density(density)
    prunable = _check_profile(profile).prunable_forward_flops_per_sample
    return round(density * prunable) + profile.forward_flops_per_sample - prunable


def bp_step_flops(profile: ModelProfile, batch_size: int, density: float = 1.0) -> int:
    """One backprop step: 3 * B * F_sparse (forward F, backward 2F)."""
    _checks.positive_int("batch_size", batch_size)
    return 3 * batch_size * sparse_forward_flops_per_sample(profile, density)


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


def ntk_scoring_flops(profile: ModelProfile, batch_size: int, samples: int = 1) -> int:
    """NTK-SAP scoring over ``samples`` weight draws of one batch each: samples * 6 * B * F (dense F)."""
    _check_profile(profile)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("samples", samples)
    return samples * NTK_FLOPS_PER_FORWARD_FLOP * batch_size * profile.forward_flops_per_sample


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
