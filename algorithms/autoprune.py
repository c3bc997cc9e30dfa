"""Automatic structured pruning in FL (arXiv 2411.01759): the server prunes whole filters by an L1 band, the
model shrinks to a smaller dense network, then plain FedAvg.

The method as implemented (``docs/autoprune.md`` has the reading, the flags and what differs from the
authors' code):

* Clients run FedAvg's local update (``local.bp_update`` with ``optim.OptimizerStep``) on the current
  architecture's dense model; the server averages the deltas (``FlatLearner.aggregate``).
* Right after averaging round t-1 (which is the start of round t), for 1 <= t <= ``prune_until``, the server
  prunes every prunable hidden layer: filter (unit) j survives iff its L1 norm lies within mu +- band*sigma of
  its layer's scores (``structured.band_keep``, at least one filter kept), and the model is rebuilt as the
  smaller dense network (``structured.shrink``): survivors copied (``after_prune="copy"``) or the smaller
  network freshly initialised (``"reinit"``, the authors' code). A prune that removes nothing keeps the model
  as it is. After ``patience`` consecutive prunes without a parameter decrease pruning stops for good.
* Rounds count aggregations (a round that missed its quorum does not advance the schedule).

State: ``ModelState(weights, None, prune_step, architecture)`` holds everything a resumed run needs.
``prune_step = t * (patience + 1) + strikes``: t aggregations so far, and ``strikes`` the consecutive prunes
without a decrease (``strikes == patience``: stopped). ``architecture == ()`` is the registered model.
A result whose delta does not have the current P (trained on an architecture pruned since, as a stale
asynchronous update can be) is left out of the average.

Timing contract, FedAvg's BP cost on the task's architecture (``config.architecture``; the state's in
learning mode, the registered one in timing mode): peak memory ``cost.bp_peak_memory_bytes``, FLOPs
``cost.bp_step_flops`` over the trained samples (``local_steps * bp_step_flops(B)`` with full batches), bytes
down and up ``cost.dense_payload_bytes`` (P*b of the current architecture; the widths themselves travel in
the task's header).
"""

from __future__ import annotations

from typing import Sequence

from algorithms import _checks
from algorithms.base import Algorithm, ResourceDemand, TaskConfig
from algorithms.batched import BackpropKernel
from algorithms.cost import OPTIMIZER_STATE_SLOTS, bp_peak_memory_bytes, bp_step_flops, dense_payload_bytes
from algorithms.learner import FlatLearner
from algorithms.local import ClientData, ClientResult, ModelState, bp_update, derive_seed
from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES, default_architecture
from algorithms.optim import OptimizerStep
from algorithms.profiling import ModelProfile, ProfiledModel
from algorithms.structured import prune_filters

__all__ = ["AutoPrune", "AFTER_PRUNE"]

AFTER_PRUNE = ("copy", "reinit")  # survivors copied, or the smaller network freshly initialised


class AutoPrune(FlatLearner, ProfiledModel, Algorithm):
    """Server-side automatic filter pruning, then FedAvg (see the module docstring)."""

    name = "autoprune"

    def __init__(self, model: str = "cnn_femnist", batch_size: int = 32, local_steps: int = 10,
                 optimizer: str = "sgd", lr: float = 0.05, local_epochs: float | None = None,
                 epoch: str = "one_pass", band: float = 2.2, prune_until: int = 50, patience: int = 3,
                 after_prune: str = "copy",
                 input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        self._init_task(model, batch_size, local_steps)
        self.optimizer = _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
        self.band = _checks.positive_float("band", band)
        self.prune_until = _checks.non_negative_int("prune_until", prune_until)
        self.patience = _checks.positive_int("patience", patience)
        self.after_prune = _checks.choice("after_prune", after_prune, AFTER_PRUNE)
        self._init_learning(lr, local_epochs, input_shape, num_classes, epoch)
        self._profile: ModelProfile | None = None

    @property
    def step(self) -> OptimizerStep:
        """The optimizer step every local step applies, sequential and batched alike."""
        return OptimizerStep(self.optimizer, self.lr)

    # --- the schedule ---------------------------------------------------------------------------------
    def schedule(self, state: ModelState) -> tuple[int, int]:
        """``(aggregations so far, consecutive prunes without a parameter decrease)`` read from ``state``."""
        return divmod(state.prune_step, self.patience + 1)

    def pruning_stopped(self, state: ModelState) -> bool:
        """Whether pruning is over for good (patience spent, or past ``prune_until``)."""
        rounds, strikes = self.schedule(state)
        return strikes >= self.patience or rounds >= self.prune_until

    def prune(self, state: ModelState) -> ModelState:
        """The end of an aggregation: one more round counted, and the server's prune of the new global model
        when the schedule says so (module docstring)."""
        rounds, strikes = self.schedule(state)
        rounds += 1
        weights, architecture = state.weights, state.architecture
        if strikes < self.patience and rounds <= self.prune_until:
            fm = self.functional_model_for(architecture)
            seed = derive_seed(self.patience, rounds)  # only the "reinit" flag draws weights
            widths, pruned = prune_filters(fm, weights, self.band, self.after_prune == "copy", seed)
            if pruned.numel() < weights.numel():
                strikes = 0
                weights = pruned
                architecture = () if widths == default_architecture(self.model) else widths
            else:
                strikes += 1
        return ModelState(weights, None, rounds * (self.patience + 1) + strikes, architecture)

    # --- learning -------------------------------------------------------------------------------------
    def aggregate(self, state: ModelState, results: Sequence[ClientResult],
                  weights: Sequence[float]) -> ModelState:
        """FedAvg over the results trained on the current architecture, then ``prune``."""
        size = state.weights.numel()
        fresh = [i for i, r in enumerate(results) if r.delta is not None and r.delta.numel() == size]
        averaged = super().aggregate(state, [results[i] for i in fresh], [weights[i] for i in fresh])
        return self.prune(averaged)

    def fit(self, state: ModelState, config: TaskConfig, data: ClientData, seed: int) -> ClientResult:
        return bp_update(self.functional_model_for(state.architecture), state, data, config.local_steps,
                         config.batch_size, self.step, seed, self.partial_batches(config))

    def batched_kernel(self, config: TaskConfig) -> BackpropKernel:
        return BackpropKernel(self.functional_model_for(config.architecture), self.step,
                              partial=self.partial_batches(config))

    def evaluate(self, state: ModelState, x, y) -> dict[str, float]:
        """Accuracy and loss, and ``params``: P of the state's architecture."""
        return {**super().evaluate(state, x, y), "params": float(state.weights.numel())}

    # --- timing ---------------------------------------------------------------------------------------
    def task(self, round_index: int, state: ModelState | None = None) -> TaskConfig:
        """``local_steps`` training steps of ``batch_size`` on the state's architecture (the registered one
        without a state, in timing mode)."""
        _checks.non_negative_int("round_index", round_index)
        architecture = () if state is None else tuple(state.architecture)
        return TaskConfig("train", self.local_steps, self.batch_size, architecture=architecture)

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """FedAvg's BP cost of one task on ``config.architecture`` (module docstring)."""
        self.check_config(config)
        profile = self.profile_for(config.architecture)
        return ResourceDemand(
            peak_memory_bytes=bp_peak_memory_bytes(profile, config.batch_size, self.optimizer),
            flops=bp_step_flops(profile, config.trained_samples),  # linear in the samples
            bytes_down=dense_payload_bytes(profile),
            bytes_up=dense_payload_bytes(profile),
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={self.model!r}, batch_size={self.batch_size}, "
                f"local_steps={self.local_steps}, optimizer={self.optimizer!r}, lr={self.lr}, "
                f"local_epochs={self.local_epochs}, epoch={self.epoch!r}, band={self.band}, "
                f"prune_until={self.prune_until}, patience={self.patience}, after_prune={self.after_prune!r})")
