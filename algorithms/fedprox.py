"""FedProx (Li et al. 2020): FedAvg whose clients minimise their loss plus the proximal term
(mu/2) ||w - w_global||^2, which holds a client's weights near the global model it started from (mu = 0
is FedAvg exactly).

Written only against the documented interface (``docs/learning.md``, "Adding an algorithm"): FedProx is
FedAvg with another optimizer step. ``ProximalStep.gradient`` adds mu (w - w_global) to the loss gradient;
FedAvg's ``fit`` (``local.bp_update``) and ``batched_kernel`` (``batched.BackpropKernel``) apply whatever
``step`` returns, so both paths run the term with no code of their own.

Timing contract (FedAvg's, ``algorithms.fedavg``, plus what the term costs a client):

* peak memory: ``cost.proximal_peak_memory_bytes`` (the global weights stay alive as the anchor, and the
  term's temporary for one parameter tensor);
* FLOPs: FedAvg's (``cost.bp_step_flops`` over the trained samples) + ``local_steps * cost.proximal_step_flops``;
* payloads: as FedAvg's (the model down, the delta up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from algorithms.base import ResourceDemand, TaskConfig
from algorithms.cost import (
    bp_step_flops,
    model_payload_bytes,
    proximal_peak_memory_bytes,
    proximal_step_flops,
    sparse_values_bytes,
)
from algorithms.fedavg import FedAvg
from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES
from algorithms.optim import OptimizerStep

__all__ = ["FedProx", "ProximalStep"]


@dataclass(frozen=True)
class ProximalStep(OptimizerStep):
    """The optimizer step on the loss plus (mu/2) ||w - anchor||^2: the gradient gains mu (w - anchor)."""

    mu: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.mu, bool) or not isinstance(self.mu, (int, float)) or not 0.0 <= self.mu < math.inf:
            raise ValueError(f"mu must be a finite number >= 0, got {self.mu!r}")

    def gradient(self, w: torch.Tensor, grad: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return grad.add_(torch.sub(w, anchor), alpha=self.mu)


class FedProx(FedAvg):
    """FedAvg with the proximal term of weight ``mu`` in every client's objective (see the module docstring)."""

    name = "fedprox"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10,
                 optimizer: str = "sgd", mu: float = 0.01, density: float = 1.0,
                 sparse_format: str = "dense_bitmap", lr: float = 0.05, local_epochs: float | None = None,
                 epoch: str = "one_pass", input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        super().__init__(model=model, batch_size=batch_size, local_steps=local_steps, optimizer=optimizer,
                         density=density, sparse_format=sparse_format, lr=lr, local_epochs=local_epochs,
                         epoch=epoch, input_shape=input_shape, num_classes=num_classes)
        self.mu = ProximalStep(self.optimizer, self.lr, mu).mu  # the step checks it

    @property
    def step(self) -> ProximalStep:
        return ProximalStep(self.optimizer, self.lr, self.mu)

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one training task (see the module docstring); phase ``'prune'`` raises ValueError."""
        self.check_config(config)
        profile, density = self.profile, self.density
        return ResourceDemand(
            peak_memory_bytes=proximal_peak_memory_bytes(
                profile, config.batch_size, self.optimizer, density, self.sparse_format),
            flops=(bp_step_flops(profile, config.trained_samples, density)
                   + config.local_steps * proximal_step_flops(profile, density)),
            bytes_down=model_payload_bytes(profile, density),
            bytes_up=sparse_values_bytes(profile, density),
        )

    def _fields(self) -> str:
        return f"{super()._fields()}, mu={self.mu}"
