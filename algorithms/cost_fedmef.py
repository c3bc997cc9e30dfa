"""FedMef's cost model per round kind (``mask``, ``plain``, ``adjust``): peak memory, FLOPs and payloads.

Notation as ``algorithms.cost``: P parameters, Pp prunable ones, b bytes per float, B batch, A the training
activation peak per sample (``ModelProfile.training_bytes_per_sample``; under SAP,
``algorithms.sap.sap_training_bytes_per_sample``: kept values, their index and the transient dense rebuild
of one layer's input during its backward), F + F_bwd the dense forward and backward FLOPs per sample,
nnz the kept prunable weights, K the marked weights of BaE, k the uploaded gradient entries, L the largest
prunable tensor.

**Peak memory** (what ``fedmef_local.fedmef_update`` holds; checked against the allocator in
``tests/algorithms/test_fedmef.py``):

* always: the dense weights P*b and the mask as the device holds it, a ``torch.bool`` per coordinate
  (``MASK_BYTES_PER_COORDINATE``: masked dense storage; a 1-bit mask would save 7P/8);
* training: gradients P*b, optimizer slots s*P*b, and the larger of B*A (the backward), B*A_fwd - P*b
  (SAP's forward, choosing the kept sets, before the gradients exist: ``sap.sap_forward_bytes_per_sample``)
  and L*b (the masked optimizer step: ``grad *= mask`` with a bool mask casts the mask of one tensor to float, after the
  activations are freed); with BaE, the marked set's int64 indices (8K) and one gathered copy of the marked
  values (K*b);
* an adjustment round adds, after training with the optimizer slots released, the dense gradient pass:
  the flat uploaded gradient P*b, autograd's gradients P*b and B*A (with top-k, the selection's
  temporaries L*b + k*(2b + 8) come after the activations are freed and are charged as the larger of the
  two). The peak is the larger of the training and the gradient phase.

**FLOPs**: masked dense storage runs dense kernels, so every step costs the dense B*(F + F_bwd) whatever
the density (``cost.bp_step_flops`` at density 1); SAP's backward rebuilds each saved input dense and runs
the same dense weight-gradient kernel, so it is charged the dense backward too (the top-k selection is
comparisons, not FLOPs). BaE adds ``BAE_FLOPS_PER_MARKED`` per marked weight per step (the penalty
gradient's multiply-add; its rate needs no norm, see ``algorithms.bae``); an adjustment round adds one dense
forward and backward on one batch. ``torch.utils.flop_counter`` sees the conv/linear part exactly; the BaE
and optimizer arithmetic it does not count.

**Payloads**: down, the kept values and the dense parameters ((nnz + P - Pp)*b), plus the 1-bit mask
(ceil(Pp/8)) in ``mask`` rounds (round 0 and after an adjustment); up, the delta of the same coordinates,
plus in ``adjust`` rounds the gradient: k values with an int32 index each (top-k), or Pp*b (dense).
"""

from __future__ import annotations

import math

from algorithms import _checks
from algorithms.cost import OPTIMIZER_STATE_SLOTS, bp_step_flops
from algorithms.profiling import ModelProfile

__all__ = ["MODES", "MASK_BYTES_PER_COORDINATE", "MARKED_INDEX_BYTES", "UPLOAD_INDEX_BYTES",
           "BAE_FLOPS_PER_MARKED", "activation_bytes_per_sample", "forward_bytes_per_sample",
           "fedmef_peak_memory_bytes", "fedmef_flops", "fedmef_bytes_down", "fedmef_bytes_up"]

MODES = ("mask", "plain", "adjust")
MASK_BYTES_PER_COORDINATE = 1  # torch.bool, as fedmef_local holds it
MARKED_INDEX_BYTES = 8  # int64 index of a marked weight (torch.topk's indices)
UPLOAD_INDEX_BYTES = 4  # int32 index of an uploaded top-k gradient entry on the wire
TOPK_INDEX_BYTES = 8  # int64 index of a top-k entry while the client selects them
BAE_FLOPS_PER_MARKED = 2  # per step: g += 2 lambda theta, a multiply-add


def activation_bytes_per_sample(profile: ModelProfile, sap_gamma: float = 0.0, sap_index: str = "bitmap") -> int:
    """A: the per-sample training activation peak, plain (``sap_gamma == 0``) or under SAP."""
    if sap_gamma == 0.0:
        return profile.training_bytes_per_sample
    from algorithms.sap import sap_training_bytes_per_sample

    return sap_training_bytes_per_sample(profile, sap_gamma, sap_index)


def forward_bytes_per_sample(profile: ModelProfile, sap_gamma: float = 0.0, sap_index: str = "bitmap") -> int:
    """A_fwd: the per-sample peak of the forward pass under SAP (choosing the kept sets), before any gradient
    buffer exists; 0 without SAP, whose forward never holds more than its backward."""
    if sap_gamma == 0.0:
        return 0
    from algorithms.sap import sap_forward_bytes_per_sample

    return sap_forward_bytes_per_sample(profile, sap_gamma, sap_index)


def _largest_prunable(profile: ModelProfile) -> int:
    return max((layer.prunable_params for layer in profile.layers), default=0)


def fedmef_peak_memory_bytes(profile: ModelProfile, batch_size: int, optimizer: str, mode: str, *,
                             activation_per_sample: int, forward_per_sample: int = 0, marked: int = 0,
                             upload: str | None = None, upload_count: int = 0) -> int:
    """Peak bytes of one FedMef task of round kind ``mode`` (see the module docstring). ``forward_per_sample``:
    A_fwd under SAP (``forward_bytes_per_sample``); ``marked``: BaE's K (0 when BaE is off in this round);
    ``upload``: ``"topk"`` / ``"dense"`` in adjust rounds, else None; ``upload_count``: k, the top-k entries."""
    _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
    _checks.choice("mode", mode, MODES)
    _checks.positive_int("batch_size", batch_size)
    b, p = profile.bytes_per_element, profile.params
    # the backward's activations, or the forward's under SAP, which come before the P*b of gradients exist
    activations = (max(batch_size * activation_per_sample, batch_size * forward_per_sample - p * b)
                   + profile.saved_weight_bytes)  # NSConv2d's, per step
    held = p * b + MASK_BYTES_PER_COORDINATE * p
    bae = marked * (MARKED_INDEX_BYTES + b)
    masked_step = _largest_prunable(profile) * b  # grad *= bool mask casts the mask to float, one tensor
    training = p * b * (1 + OPTIMIZER_STATE_SLOTS[optimizer]) + max(activations, masked_step) + bae
    if mode != "adjust" or upload is None:
        return held + training
    selection = _largest_prunable(profile) * b + upload_count * (2 * b + TOPK_INDEX_BYTES) if upload == "topk" else 0
    gradient_pass = p * b + max(p * b + activations, selection)
    return held + max(training, gradient_pass)


def fedmef_flops(profile: ModelProfile, batch_size: int, steps: int, *, marked: int = 0,
                 adjust: bool = False, samples: int = 0) -> int:
    """FLOPs of one task: ``steps`` dense BP steps (of ``samples`` samples in all when an epoch ends in a
    partial batch; 0: ``steps * batch_size``), BaE's elementwise work, and the adjustment gradient (one batch
    of ``batch_size``)."""
    _checks.positive_int("steps", steps)
    step = bp_step_flops(profile, batch_size, 1.0)
    trained = bp_step_flops(profile, samples or steps * batch_size, 1.0)  # linear in the samples
    return trained + steps * BAE_FLOPS_PER_MARKED * marked + (step if adjust else 0)


def _values_bytes(profile: ModelProfile, kept: int) -> int:
    return (kept + profile.params - profile.prunable_params) * profile.bytes_per_element


def fedmef_bytes_down(profile: ModelProfile, kept: int, with_mask: bool) -> int:
    """The kept values and dense parameters, + the 1-bit mask over the prunable weights when it ships."""
    return _values_bytes(profile, kept) + (math.ceil(profile.prunable_params / 8) if with_mask else 0)


def fedmef_bytes_up(profile: ModelProfile, kept: int, upload: str | None = None, upload_count: int = 0) -> int:
    """The delta of the kept values and dense parameters, + the adjustment round's gradient."""
    extra = 0
    if upload == "topk":
        extra = upload_count * (profile.bytes_per_element + UPLOAD_INDEX_BYTES)
    elif upload == "dense":
        extra = profile.prunable_params * profile.bytes_per_element
    return _values_bytes(profile, kept) + extra
