"""FedAvg with backpropagation: the dense (or masked) baseline every BP-free method is compared against.

Timing contract: one task is ``local_steps`` SGD/momentum/Adam steps of ``batch_size`` samples.

* peak memory: ``cost.bp_peak_memory_bytes`` (weights, gradients, optimizer slots, saved activations, batch);
* FLOPs: ``local_steps * cost.bp_step_flops`` (3*B*F per step, F scaled by density for pruned layers);
* downlink: the model, ``cost.model_payload_bytes`` (P*b dense; at density < 1 the kept values and biases plus
  the 1-bit mask, since a client may not know the mask yet);
* uplink: the update, ``cost.sparse_values_bytes`` (P*b dense; at density < 1 only the kept values and biases:
  the server already knows the mask it sent, so the mask need not travel back).
"""

from __future__ import annotations

from algorithms import _checks
from algorithms.base import Algorithm, ResourceDemand, TaskConfig
from algorithms.cost import (
    OPTIMIZER_STATE_SLOTS,
    SPARSE_FORMATS,
    bp_peak_memory_bytes,
    bp_step_flops,
    model_payload_bytes,
    sparse_values_bytes,
)
from algorithms.models import MODELS
from algorithms.profiling import ModelProfile, ProfiledModel

__all__ = ["FedAvg"]


class FedAvg(ProfiledModel, Algorithm):
    """Federated averaging of backprop-trained local models (McMahan et al. 2017)."""

    name = "fedavg"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10,
                 optimizer: str = "sgd", density: float = 1.0, sparse_format: str = "dense_bitmap") -> None:
        self.model = _checks.choice("model", model, sorted(MODELS))
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.local_steps = _checks.positive_int("local_steps", local_steps)
        self.optimizer = _checks.choice("optimizer", optimizer, OPTIMIZER_STATE_SLOTS)
        self.density = _checks.density("density", density)
        self.sparse_format = _checks.choice("sparse_format", sparse_format, SPARSE_FORMATS)
        self._profile: ModelProfile | None = None

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one training task (see the module docstring); phase ``'prune'`` raises ValueError."""
        if not isinstance(config, TaskConfig) or config.phase != "train":
            raise ValueError(f"config must be a TaskConfig of phase 'train' for {self.name}, got {config!r}")
        profile, density = self.profile, self.density
        return ResourceDemand(
            peak_memory_bytes=bp_peak_memory_bytes(
                profile, config.batch_size, self.optimizer, density, self.sparse_format),
            flops=config.local_steps * bp_step_flops(profile, config.batch_size, density),
            bytes_down=model_payload_bytes(profile, density),
            bytes_up=sparse_values_bytes(profile, density),
        )

    def __repr__(self) -> str:
        return (f"FedAvg(model={self.model!r}, batch_size={self.batch_size}, local_steps={self.local_steps}, "
                f"optimizer={self.optimizer!r}, density={self.density}, sparse_format={self.sparse_format!r})")
