"""The learning plane shared by the algorithms that train one named model as a flat weight vector.

``FlatLearner`` (a mixin next to ``ProfiledModel``) gives an algorithm:

* ``functional_model``: the named model for the run's ``input_shape`` and ``num_classes``;
* ``initial_state(seed)``: torch's default initialisation from ``seed``, dense;
* ``client_task``: the round's task fitted to a client's data size. With ``local_epochs`` set, a client
  runs ``ceil(local_epochs * n / batch)`` steps (more data, more work); otherwise ``local_steps``. The batch
  never exceeds the client's sample count;
* ``evaluate``: accuracy and loss of the global weights on a held-out set;
* ``average_deltas``: the new weights ``w + sum_k a_k delta_k`` with ``a_k = weight_k * n_k / sum_j n_j``
  (FedAvg's sample weighting; ``weight_k`` is 1 in a synchronous round and the staleness discount in FedBuff).
"""

from __future__ import annotations

import math
from typing import Sequence

from algorithms import _checks
from algorithms.base import TaskConfig
from algorithms.local import ClientResult, ModelState, evaluate, weighted_sum
from algorithms.models import check_input_shape
from algorithms.params import FunctionalModel

__all__ = ["FlatLearner"]


class FlatLearner:
    """Mixin: subclasses set ``model`` and call ``_init_learning`` in ``__init__``."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    local_epochs: float | None
    _fm: FunctionalModel | None

    def _init_learning(self, lr: float, local_epochs: float | None, input_shape: tuple[int, ...],
                       num_classes: int) -> None:
        """Check and keep the learning-plane parameters every flat-weight algorithm takes."""
        self.lr = _checks.positive_float("lr", lr)
        self.local_epochs = None if local_epochs is None else _checks.positive_float("local_epochs",
                                                                                      local_epochs)
        self.input_shape = check_input_shape(input_shape)
        self.num_classes = _checks.positive_int("num_classes", num_classes)
        self._fm = None

    @property
    def functional_model(self) -> FunctionalModel:
        if self._fm is None:
            self._fm = FunctionalModel(self.model, tuple(self.input_shape), self.num_classes)
        return self._fm

    def initial_state(self, seed: int) -> ModelState:
        return ModelState(self.functional_model.init_weights(seed))

    def client_task(self, config: TaskConfig, num_samples: int) -> TaskConfig:
        batch = max(1, min(config.batch_size, num_samples))
        steps = config.local_steps
        if self.local_epochs is not None and config.phase == "train":
            steps = max(1, math.ceil(self.local_epochs * num_samples / batch))
        if (steps, batch) == (config.local_steps, config.batch_size):
            return config
        return TaskConfig(config.phase, steps, batch)

    def evaluate(self, state: ModelState, x, y) -> dict[str, float]:
        return evaluate(self.functional_model, state, x, y)

    @staticmethod
    def average_deltas(state: ModelState, deltas: Sequence, results: Sequence[ClientResult],
                       weights: Sequence[float]) -> ModelState:
        if not deltas:
            return state
        total = sum(r.num_samples for r in results)
        alphas = [w * r.num_samples / total for r, w in zip(results, weights)]
        new = state.weights + weighted_sum(list(deltas), alphas)
        if state.mask is not None:
            new.mul_(state.mask)
        return ModelState(new, state.mask, state.prune_step)
