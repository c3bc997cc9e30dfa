"""FedMef (Huang et al., CVPR 2024): memory-efficient federated dynamic pruning with budget-aware extrusion
(BaE) and scaled activation pruning (SAP); ``docs/fedmef.md`` has the method as implemented, where the
paper's and the code's readings differ, and the measured cost model.

Rounds (t = the state's ``prune_step`` in learning mode, the number of aggregated rounds; the round index in
timing mode) are of three kinds, ``TaskConfig.mode``:

* ``"adjust"`` when t > 0, t % ``adjust_every`` == 0 and t <= ``adjust_until``: clients train (with BaE by
  default), then upload the delta and a dense gradient on one local batch (top-k of the inactive positions,
  or dense); the server averages both by sample count, then drops the k_l smallest |theta| of each prunable
  tensor and grows the k_l largest |aggregated gradient| among its inactive positions (grown at 0), with
  k_l = int(f_decay(t) * N_active_l) and f_decay the cosine decay from ``adjust_alpha`` to 0 at
  ``adjust_until``;
* ``"mask"``: round 0 and the round after an adjustment: the weights and the new mask go down;
* ``"plain"``: the weights go down, the delta comes up.

The model starts sparse at ``density`` (ERK or uniform layer densities, magnitude at random initialisation;
biases and gains dense); per-tensor density never changes.

Timing contract: ``cost_fedmef`` per round kind. BaE's K and the top-k upload's k depend on t; the demand
charges their largest value (t = ``adjust_every``, the first adjustment; t = 0 for BaE every round), so a
device that passes the gate can run any round of that kind.
"""

from __future__ import annotations

from typing import Sequence

from algorithms import _checks
from algorithms.aggregate import apply_delta, mean_delta
from algorithms.bae import marked_indices
from algorithms.base import Algorithm, ResourceDemand, TaskConfig, UpdateShape
from algorithms.batched import BackpropKernel, MarkedPenalty
from algorithms.batched.layers import supports_sap
from algorithms.cost import OPTIMIZER_STATE_SLOTS
from algorithms.cost_fedmef import (
    MODES,
    activation_bytes_per_sample,
    fedmef_bytes_down,
    fedmef_bytes_up,
    fedmef_flops,
    fedmef_peak_memory_bytes,
    forward_bytes_per_sample,
)
from algorithms.dynamic_sparse import (
    LAYER_DENSITIES,
    f_decay,
    initial_mask,
    kept_counts,
    prunable_spans,
    prune_and_grow,
    swap_counts,
)
from algorithms.fedmef_local import GRADIENT_UPLOADS, BaeSettings, fedmef_update
from algorithms.learner import FlatLearner
from algorithms.local import ClientData, ClientResult, ModelState
from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES
from algorithms.optim import OptimizerStep
from algorithms.profiling import ModelProfile, ProfiledModel

__all__ = ["FedMef"]


def _unit_float(field: str, value: object, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= high:
        raise ValueError(f"{field} must be a number in [0, {high:g}], got {value!r}")
    return float(value)


class FedMef(FlatLearner, ProfiledModel, Algorithm):
    """FedMef's cost model and learner (see the module docstring)."""

    name = "fedmef"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10, optimizer: str = "sgd",
                 lr: float = 0.05, local_epochs: float | None = None, epoch: str = "one_pass",
                 density: float = 0.1,
                 layer_density: str = "erk", adjust_every: int = 10, adjust_until: int = 100,
                 adjust_alpha: float = 0.2, grad_upload: str = "topk", bae: str = "on", bae_lambda: float = 1e-4,
                 bae_norm: str = "l2", bae_penalty: str = "squared", bae_rounds: str = "adjust",
                 sap_gamma: float = 0.5, sap_index: str = "bitmap",
                 input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        self._init_task(model, batch_size, local_steps)
        self.optimizer = _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
        self.density = _checks.density("density", density)
        self.layer_density = _checks.choice("layer_density", layer_density, LAYER_DENSITIES)
        self.adjust_every = _checks.positive_int("adjust_every", adjust_every)
        self.adjust_until = _checks.non_negative_int("adjust_until", adjust_until)
        self.adjust_alpha = _unit_float("adjust_alpha", adjust_alpha)
        self.grad_upload = _checks.choice("grad_upload", grad_upload, GRADIENT_UPLOADS)
        self.bae = _checks.choice("bae", bae, ("on", "off"))
        self.bae_lambda = _unit_float("bae_lambda", bae_lambda, 1e3)
        self.bae_norm = _checks.choice("bae_norm", bae_norm, ("l2", "l1"))
        self.bae_penalty = _checks.choice("bae_penalty", bae_penalty, ("squared", "unsquared"))
        self.bae_rounds = _checks.choice("bae_rounds", bae_rounds, ("adjust", "every"))
        self.sap_gamma = _unit_float("sap_gamma", sap_gamma, 0.999)
        self.sap_index = _checks.choice("sap_index", sap_index, ("int32", "bitmap"))
        self._init_learning(lr, local_epochs, input_shape, num_classes, epoch)
        self._profile: ModelProfile | None = None

    # --- the schedule --------------------------------------------------------------------------------
    def is_adjustment(self, t: int) -> bool:
        """Whether round t adjusts the mask: 0 < t <= adjust_until and t % adjust_every == 0."""
        return 0 < t <= self.adjust_until and t % self.adjust_every == 0

    def mode_at(self, t: int) -> str:
        """The kind of round t: ``"adjust"``, ``"mask"`` (t = 0 or after an adjustment) or ``"plain"``."""
        if self.is_adjustment(t):
            return "adjust"
        return "mask" if t == 0 or self.is_adjustment(t - 1) else "plain"

    def task(self, round_index: int, state: ModelState | None = None) -> TaskConfig:
        """``local_steps`` of ``batch_size`` in phase ``'train'``, of the round kind ``mode_at(t)``."""
        _checks.non_negative_int("round_index", round_index)
        t = round_index if state is None else state.prune_step
        return TaskConfig("train", self.local_steps, self.batch_size, mode=self.mode_at(t))

    def swap_fraction(self, t: int) -> float:
        """f_decay(t): the share of each tensor's active weights swapped (and marked by BaE) at round t."""
        return f_decay(t, self.adjust_alpha, self.adjust_until)

    def bae_active(self, mode: str) -> bool:
        """Whether BaE runs in a round of kind ``mode``."""
        return self.bae == "on" and (mode == "adjust" or self.bae_rounds == "every")

    # --- learning ------------------------------------------------------------------------------------
    @property
    def step(self) -> OptimizerStep:
        return OptimizerStep(self.optimizer, self.lr)

    def init(self, seed: int) -> ModelState:
        """Random initialisation from ``seed``, masked to ``density`` (``layer_density``, magnitude)."""
        weights = self.functional_model.init_weights(seed)
        mask = initial_mask(self.functional_model.layout, weights, self.density, self.layer_density)
        return ModelState(weights * mask, mask, 0)

    def fit(self, state: ModelState, config: TaskConfig, data: ClientData, seed: int) -> ClientResult:
        fm, t = self.functional_model, state.prune_step
        mode = config.mode or self.mode_at(t)
        mask = state.mask
        counts = swap_counts(mask, fm.layout, self.swap_fraction(t)) if mask is not None else []
        bae = None
        if self.bae_active(mode) and sum(counts) > 0:
            bae = BaeSettings(tuple(counts), self.bae_lambda, self.bae_norm, self.bae_penalty)
        upload = self.grad_upload if mode == "adjust" else None
        return fedmef_update(fm, state, data, config.local_steps, config.batch_size, self.step, seed, bae=bae,
                             sap_gamma=self.sap_gamma, sap_index=self.sap_index, upload=upload,
                             upload_counts=counts, partial=self.partial_batches(config))

    def batched_kernel(self, config: TaskConfig) -> BackpropKernel | None:
        """``fit`` of a ``"mask"`` or ``"plain"`` round, batched: ``BackpropKernel`` with the state's mask
        (applied by the step), SAP on the linear layers at ``sap_gamma`` and, when BaE runs in the round, its
        penalty on the marked set (fixed from the global state, so the same for every client). None (every
        client runs ``fit``): an ``"adjust"`` round (the extra gradient pass and its upload), a config without
        a mode (``fit`` reads it from the state), and SAP on a model the batched SAP layers cannot run (a
        convolution: ``supports_sap``). A model the batched layers do not support at all gets no result from
        the kernel either, so ``fit`` runs."""
        mode = config.mode
        if mode not in ("mask", "plain"):
            return None
        fm = self.functional_model
        if self.sap_gamma > 0 and not supports_sap(fm):
            return None

        def marked(state: ModelState) -> MarkedPenalty | None:
            """BaE's penalty on the marked set ``fit`` fixes from ``state`` (None when nothing is marked)."""
            if state.mask is None:
                return None
            counts = swap_counts(state.mask, fm.layout, self.swap_fraction(state.prune_step))
            if sum(counts) == 0:
                return None
            spans = prunable_spans(fm.layout)
            indices = marked_indices(state.weights, state.mask, spans, counts)
            return MarkedPenalty({o: idx for (o, _, _), idx in zip(spans, indices)}, self.bae_lambda,
                                 self.bae_penalty)

        return BackpropKernel(fm, self.step, self.sap_gamma, marked if self.bae_active(mode) else None,
                              partial=self.partial_batches(config))

    def aggregate(self, state: ModelState, results: Sequence[ClientResult],
                  weights: Sequence[float]) -> ModelState:
        """Sample-weighted mean of the deltas; in an adjustment round, also of the gradients, then
        prune-and-grow. ``prune_step`` advances by one per aggregation."""
        if not results:
            return state
        t, mask = state.prune_step, state.mask
        delta = mean_delta([r.delta for r in results], [r.num_samples for r in results], weights)
        new = apply_delta(state.weights, delta, mask)
        graded = [(r, w) for r, w in zip(results, weights) if r.gradient is not None]
        if self.is_adjustment(t) and graded and mask is not None:
            gradient = mean_delta([r.gradient for r, _ in graded], [r.num_samples for r, _ in graded],
                                  [w for _, w in graded])
            counts = swap_counts(mask, self.functional_model.layout, self.swap_fraction(t))
            new, mask = prune_and_grow(new, mask, gradient, self.functional_model.layout, counts)
        return ModelState(new, mask, t + 1)

    def update_shape(self, config: TaskConfig) -> UpdateShape:
        return UpdateShape("delta_grad" if config.mode == "adjust" else "delta")

    # --- cost ----------------------------------------------------------------------------------------
    def kept_per_tensor(self) -> list[int]:
        """Kept weights per prunable tensor (constant over the run)."""
        return kept_counts(self.functional_model.layout, self.density, self.layer_density)

    def _swap_bound(self, t: int) -> int:
        return sum(int(self.swap_fraction(t) * n) for n in self.kept_per_tensor())

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one task of round kind ``config.mode`` (``""`` is costed as ``"plain"``)."""
        self.check_config(config)
        mode = config.mode or "plain"
        _checks.choice("TaskConfig.mode", mode, MODES)
        profile, batch = self.profile, config.batch_size
        first_adjust = self._swap_bound(self.adjust_every) if self.adjust_every <= self.adjust_until else 0
        marked = 0
        if self.bae_active(mode):
            marked = first_adjust if self.bae_rounds == "adjust" else self._swap_bound(0)
        upload = self.grad_upload if mode == "adjust" else None
        upload_count = first_adjust if upload == "topk" else 0
        kept = sum(self.kept_per_tensor())
        with_mask = mode == "mask" or (mode == "adjust" and self.adjust_every == 1)
        return ResourceDemand(
            peak_memory_bytes=fedmef_peak_memory_bytes(
                profile, batch, self.optimizer, mode,
                activation_per_sample=activation_bytes_per_sample(profile, self.sap_gamma, self.sap_index),
                forward_per_sample=forward_bytes_per_sample(profile, self.sap_gamma, self.sap_index),
                marked=marked, upload=upload, upload_count=upload_count),
            flops=fedmef_flops(profile, batch, config.local_steps, marked=marked, adjust=mode == "adjust",
                               samples=config.samples),
            bytes_down=fedmef_bytes_down(profile, kept, with_mask),
            bytes_up=fedmef_bytes_up(profile, kept, upload, upload_count),
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in (
            "model", "batch_size", "local_steps", "optimizer", "lr", "local_epochs", "epoch", "density",
            "layer_density",
            "adjust_every", "adjust_until", "adjust_alpha", "grad_upload", "bae", "bae_lambda", "bae_norm",
            "bae_penalty", "bae_rounds", "sap_gamma", "sap_index"))
        return f"FedMef({fields})"
