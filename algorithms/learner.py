"""The learning side shared by the algorithms that train one named model as a flat weight vector.

``FlatLearner`` (a mixin next to ``ProfiledModel``) implements most of ``base.Learner`` over
``local.ModelState`` / ``local.ClientData`` / ``local.ClientResult``:

* ``functional_model``: the named model for the run's ``input_shape`` and ``num_classes`` (its registered
  architecture); ``functional_model_for(architecture)``: the same model with other hidden widths, built once
  per architecture (structured pruning changes the architecture during a run);
* ``init(seed)``: torch's default initialisation from ``seed``, dense;
* ``fit_config``: the round's task fitted to a client's data size. With ``local_epochs`` set, a client
  runs ``ceil(local_epochs * n / batch)`` steps (more data, more work); otherwise ``local_steps``. The batch
  never exceeds the client's sample count;
* ``aggregate``: the next weights ``aggregate.apply_delta(w, aggregate.mean_delta(...), mask)``, FedAvg's
  sample-weighted mean of the deltas that ``delta_of`` reads from each result (a subclass whose results
  carry something else, as ZO's seed pairs, overrides ``delta_of``); mask, ``prune_step`` and
  ``architecture`` are kept;
* ``evaluate``: accuracy and loss of the global weights (of the state's architecture) on a held-out set;
* ``update_shape``: a ``delta`` (``scores`` in phase ``'prune'``).

The subclass writes ``fit`` (and, when it can, ``batched_kernel``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import torch

from algorithms import _checks
from algorithms.aggregate import apply_delta, mean_delta
from algorithms.base import Learner, TaskConfig, UpdateShape
from algorithms.local import ClientData, ClientResult, ModelState, evaluate
from algorithms.models import MODELS, check_input_shape
from algorithms.params import FunctionalModel

__all__ = ["FlatLearner"]


class FlatLearner(Learner[ModelState, ClientData, ClientResult]):
    """Mixin: subclasses set ``model`` and call ``_init_learning`` in ``__init__``."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    local_epochs: float | None
    _fm: FunctionalModel | None

    def _init_task(self, model: str, batch_size: int, local_steps: int) -> None:
        """Check and keep what every algorithm's task is made of: the registered model's name, the batch size
        and the local steps."""
        self.model = _checks.choice("model", model, sorted(MODELS))
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.local_steps = _checks.positive_int("local_steps", local_steps)

    def _init_learning(self, lr: float, local_epochs: float | None, input_shape: tuple[int, ...],
                       num_classes: int) -> None:
        """Check and keep the learning-side parameters every flat-weight algorithm takes."""
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

    def functional_model_for(self, architecture: tuple[int, ...] = ()) -> FunctionalModel:
        """The model with hidden widths ``architecture`` (``()``: ``functional_model``), built once per
        architecture and kept."""
        architecture = tuple(architecture)
        if architecture == () or architecture == self.functional_model.architecture:
            return self.functional_model
        cache = self.__dict__.setdefault("_fm_by_architecture", {})
        if architecture not in cache:
            cache[architecture] = FunctionalModel(self.model, tuple(self.input_shape), self.num_classes,
                                                  architecture)
        return cache[architecture]

    def init(self, seed: int) -> ModelState:
        return ModelState(self.functional_model.init_weights(seed))

    def fit_config(self, config: TaskConfig, num_samples: int) -> TaskConfig:
        batch = max(1, min(config.batch_size, num_samples))
        steps = config.local_steps
        if self.local_epochs is not None and config.phase == "train":
            steps = max(1, math.ceil(self.local_epochs * num_samples / batch))
        if (steps, batch) == (config.local_steps, config.batch_size):
            return config
        return replace(config, local_steps=steps, batch_size=batch)

    def update_shape(self, config: TaskConfig) -> UpdateShape:
        return UpdateShape("scores" if config.phase == "prune" else "delta")

    def delta_of(self, state: ModelState, result: ClientResult) -> torch.Tensor:
        """The weight delta ``result`` stands for (it started from ``state``)."""
        return result.delta

    def aggregate(self, state: ModelState, results: Sequence[ClientResult],
                  weights: Sequence[float]) -> ModelState:
        if not results:
            return state
        delta = mean_delta([self.delta_of(state, r) for r in results], [r.num_samples for r in results], weights)
        return ModelState(apply_delta(state.weights, delta, state.mask), state.mask, state.prune_step,
                          state.architecture)

    def evaluate(self, state: ModelState, x, y) -> dict[str, float]:
        return evaluate(self.functional_model_for(state.architecture), state, x, y)
