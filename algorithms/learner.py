"""The learning side shared by the algorithms that train one named model as a flat weight vector.

``FlatLearner`` (a mixin next to ``ProfiledModel``) implements most of ``base.Learner`` over
``local.ModelState`` / ``local.ClientData`` / ``local.ClientResult``:

* ``functional_model``: the named model for the run's ``input_shape`` and ``num_classes`` (its registered
  architecture); ``functional_model_for(architecture)``: the same model with other hidden widths, built once
  per architecture (structured pruning changes the architecture during a run);
* ``init(seed)``: torch's default initialisation from ``seed``, dense;
* ``fit_config``: the round's task fitted to a client's data size. With ``local_epochs`` set, a client
  runs that many epochs over its n samples (more data, more work): with ``epoch="one_pass"`` (the default)
  ``ceil(n / batch)`` steps per epoch, the last one partial, and the config's ``samples`` says how many
  samples that trains when it is not ``steps * batch``; with ``epoch="full_batches"``
  ``ceil(local_epochs * n / batch)`` full batches (``local.batch_plan``). Otherwise ``local_steps`` full
  batches. The batch never exceeds the client's sample count;
* ``partial_batches(config)``: whether ``config``'s epochs end in partial batches, the flag ``fit`` and the
  batched kernel pass to ``local.batch_plan``;
* ``aggregate``: the next weights ``aggregate.apply_delta(w, aggregate.mean_delta(...), mask)``, FedAvg's
  sample-weighted mean of the deltas that ``delta_of`` reads from each result (a subclass whose results
  carry something else, as ZO's seed pairs, overrides ``delta_of``); mask, ``prune_step`` and
  ``architecture`` are kept;
* ``evaluate``: accuracy and loss of the global weights (of the state's architecture) on a held-out set;
* ``update_shape``: a ``delta`` (``scores`` in phase ``'prune'``).

The subclass writes ``fit`` (and, when it can, ``batched_kernel``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from algorithms import _checks
from algorithms.aggregate import apply_delta, mean_delta
from algorithms.base import Learner, TaskConfig, UpdateShape
from algorithms.local import EPOCHS, ClientData, ClientResult, ModelState, epoch_steps, evaluate, plan_samples
from algorithms.models import MODELS, check_input_shape
from algorithms.params import FunctionalModel

__all__ = ["FlatLearner"]


class FlatLearner(Learner[ModelState, ClientData, ClientResult]):
    """Mixin: subclasses set ``model`` and call ``_init_learning`` in ``__init__``."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    local_epochs: float | None
    epoch: str
    _fm: FunctionalModel | None

    def _init_task(self, model: str, batch_size: int, local_steps: int) -> None:
        """Check and keep what every algorithm's task is made of: the registered model's name, the batch size
        and the local steps."""
        self.model = _checks.choice("model", model, sorted(MODELS))
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.local_steps = _checks.positive_int("local_steps", local_steps)

    def _init_learning(self, lr: float, local_epochs: float | None, input_shape: tuple[int, ...],
                       num_classes: int, epoch: str = EPOCHS[0]) -> None:
        """Check and keep the learning-side parameters every flat-weight algorithm takes."""
        self.lr = _checks.positive_float("lr", lr)
        self.local_epochs = None if local_epochs is None else _checks.positive_float("local_epochs",
                                                                                      local_epochs)
        self.epoch = _checks.choice("epoch", epoch, EPOCHS)
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

    def partial_batches(self, config: TaskConfig) -> bool:
        """Whether ``config``'s local steps are epochs whose last batch may be partial (``epoch="one_pass"``
        with ``local_epochs``, in phase ``'train'``): the ``partial`` flag of ``local.batch_plan``."""
        return self.local_epochs is not None and self.epoch == "one_pass" and config.phase == "train"

    def fit_config(self, config: TaskConfig, num_samples: int) -> TaskConfig:
        batch = max(1, min(config.batch_size, num_samples))
        steps, samples = config.local_steps, 0
        if self.local_epochs is not None and config.phase == "train":
            partial = self.partial_batches(config)
            steps = epoch_steps(num_samples, batch, self.local_epochs, partial)
            samples = plan_samples(num_samples, batch, steps, partial)
            samples = 0 if samples == steps * batch else samples
        if (steps, batch, samples) == (config.local_steps, config.batch_size, config.samples):
            return config
        return replace(config, local_steps=steps, batch_size=batch, samples=samples)

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
