"""FedAvg with backpropagation: the dense (or masked) baseline every BP-free method is compared against.

Timing contract: one task is ``local_steps`` SGD/momentum/Adam steps of ``batch_size`` samples (``samples`` in
all when its epochs end in partial batches: ``TaskConfig.trained_samples``).

* peak memory: ``cost.bp_peak_memory_bytes`` (weights, gradients, optimizer slots, saved activations, batch);
* FLOPs: ``cost.bp_step_flops`` over the task's trained samples (3*F per sample, F scaled by density for pruned
  layers; ``local_steps * bp_step_flops(B)`` when every step is a full batch);
* downlink: the model, ``cost.model_payload_bytes`` (P*b dense; at density < 1 the kept values and biases plus
  the 1-bit mask, since a client may not know the mask yet);
* uplink: the update, ``cost.sparse_values_bytes`` (P*b dense; at density < 1 only the kept values and biases:
  the server already knows the mask it sent, so the mask need not travel back).

Learning: ``fit`` is ``local.bp_update`` with the optimizer step ``self.step``; ``batched_kernel`` is the
batched ``BackpropKernel`` with the same step. A variant that changes the local objective overrides ``step``
(``algorithms.fedprox``).
"""

from __future__ import annotations

from algorithms import _checks
from algorithms.base import Algorithm, ResourceDemand, TaskConfig
from algorithms.batched import BackpropKernel
from algorithms.cost import (
    OPTIMIZER_STATE_SLOTS,
    SPARSE_FORMATS,
    bp_peak_memory_bytes,
    bp_step_flops,
    model_payload_bytes,
    sparse_values_bytes,
)
from algorithms.learner import FlatLearner
from algorithms.local import ClientData, ClientResult, ModelState, bp_update
from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES
from algorithms.optim import OptimizerStep
from algorithms.profiling import ModelProfile, ProfiledModel

__all__ = ["FedAvg"]


class FedAvg(FlatLearner, ProfiledModel, Algorithm):
    """Federated averaging of backprop-trained local models (McMahan et al. 2017).

    Learning: each client runs ``bp_update`` (SGD, momentum 0.9 or Adam at ``lr``); the server adds the
    sample-weighted mean of the deltas (``FlatLearner.aggregate``). ``density < 1`` only costs a pruned
    model (timing mode): FedAvg has no pruner, so learning mode refuses it.
    """

    name = "fedavg"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10,
                 optimizer: str = "sgd", density: float = 1.0, sparse_format: str = "dense_bitmap",
                 lr: float = 0.05, local_epochs: float | None = None, epoch: str = "one_pass",
                 input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        self._init_task(model, batch_size, local_steps)
        self.optimizer = _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
        self.density = _checks.density("density", density)
        self.sparse_format = _checks.choice("sparse_format", sparse_format, SPARSE_FORMATS)
        self._init_learning(lr, local_epochs, input_shape, num_classes, epoch)
        self._profile: ModelProfile | None = None

    def init(self, seed: int) -> ModelState:
        if self.density != 1.0:
            raise ValueError(f"{self.name}: learning mode needs density 1 ({self.name} has no pruner; "
                             "use fedfpzo or a pruned zo)")
        return super().init(seed)

    @property
    def step(self) -> OptimizerStep:
        """The optimizer step every local step applies, sequential and batched alike."""
        return OptimizerStep(self.optimizer, self.lr)

    def fit(self, state: ModelState, config: TaskConfig, data: ClientData, seed: int) -> ClientResult:
        return bp_update(self.functional_model, state, data, config.local_steps, config.batch_size, self.step,
                         seed, self.partial_batches(config))

    def batched_kernel(self, config: TaskConfig) -> BackpropKernel:
        return BackpropKernel(self.functional_model, self.step, partial=self.partial_batches(config))

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one training task (see the module docstring); phase ``'prune'`` raises ValueError."""
        self.check_config(config)
        profile, density = self.profile, self.density
        return ResourceDemand(
            peak_memory_bytes=bp_peak_memory_bytes(
                profile, config.batch_size, self.optimizer, density, self.sparse_format),
            flops=bp_step_flops(profile, config.trained_samples, density),  # linear in the samples
            bytes_down=model_payload_bytes(profile, density),
            bytes_up=sparse_values_bytes(profile, density),
        )

    def _fields(self) -> str:
        return (f"model={self.model!r}, batch_size={self.batch_size}, local_steps={self.local_steps}, "
                f"optimizer={self.optimizer!r}, density={self.density}, sparse_format={self.sparse_format!r}, "
                f"lr={self.lr}, local_epochs={self.local_epochs}, epoch={self.epoch!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields()})"
