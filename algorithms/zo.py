"""Zeroth-order (BP-free) federated training, dense or on a pruned mask, and FedFPZO.

``ZerothOrder`` timing contract: one task is ``local_steps`` central-difference ZO steps with ``queries``
directions each, on the kept coordinates of a mask of ``density`` (MeZO seed trick: memory stays at inference
level).

* peak memory: ``cost.zo_peak_memory_bytes``; FLOPs: ``local_steps * cost.zo_step_flops``
  (``cost.zo_task_flops`` over the trained samples when an epoch ends in a partial batch);
* downlink: ``cost.model_payload_bytes`` (dense, or kept values plus the mask);
* uplink ``"delta"``: ``cost.sparse_values_bytes`` (the server knows the mask); uplink ``"seeds"``:
  ``cost.seed_pairs_bytes(queries, local_steps)``, one (seed, projected difference) pair per query per step,
  which the server replays.

``FedFPZO`` (arXiv 2405.04765) first prunes with federated NTK-SAP saliency, then trains as ``ZerothOrder``
at ``density`` (default 0.1, stored ``"csr"`` by default: a bitmap-masked dense tensor saves no memory, and
the paper's memory reduction assumes the pruned weights are not stored).

``prune_on="server"`` (default, data-free): the server scores, clients only ever see phase ``'train'``, and
``server_demand()`` gives the server's bill. ``prune_on="clients"``: rounds
``0 .. prune_iters-1`` are phase ``'prune'`` (one round per iterative-pruning step, since the federated score
must be aggregated before the next re-scoring), each scoring ``prune_samples`` weight draws of one batch:

* peak memory ``cost.ntk_scoring_memory_bytes`` (BP-level), FLOPs ``cost.ntk_scoring_flops``;
* downlink the current mask (``cost.mask_bytes``; weights are re-drawn from seeds, data-free);
* uplink the scores (``cost.score_payload_bytes``, one float per prunable weight).
"""

from __future__ import annotations

from typing import Sequence

import torch

from algorithms import _checks
from algorithms.aggregate import score_sum
from algorithms.base import Algorithm, ResourceDemand, TaskConfig, UpdateShape
from algorithms.batched import ZerothOrderKernel
from algorithms.cost import (
    SPARSE_FORMATS,
    mask_bytes,
    model_payload_bytes,
    ntk_scoring_flops,
    ntk_scoring_memory_bytes,
    score_payload_bytes,
    seed_pairs_bytes,
    sparse_values_bytes,
    zo_peak_memory_bytes,
    zo_task_flops,
)
from algorithms.learner import FlatLearner
from algorithms.local import (
    UPLINKS,
    ClientData,
    ClientResult,
    ModelState,
    batch_plan,
    derive_seed,
    fixup_fraction,
    keep_uplink,
    replay_seed_pairs,
    zo_update,
)
from algorithms.models import DEFAULT_INPUT_SHAPE, DEFAULT_NUM_CLASSES
from algorithms.profiling import ModelProfile, ProfiledModel

__all__ = ["ZerothOrder", "FedFPZO", "UPLINKS", "PRUNE_SITES", "PRUNERS", "PRUNE_DATA"]

PRUNE_SITES = ("server", "clients")
PRUNERS = ("ntk", "random", "magnitude", "snip")
PRUNE_DATA = ("free", "local")
_PRUNE_PURPOSE = 7  # seed-derivation tag of the server's pruning randomness


class ZerothOrder(FlatLearner, ProfiledModel, Algorithm):
    """Federated ZO-SGD with central differences and the MeZO seed trick; dense when ``density == 1``.

    Learning: each client runs ``local.zo_update`` (``queries`` directions per step, smoothing ``mu``,
    step ``lr``, per-direction clipping ``clip``); with ``uplink="seeds"`` only the (seed, coefficient) pairs
    travel and the server replays them (``local.replay_seed_pairs``, bit-identical to the client's delta).
    ``density < 1`` needs a mask, i.e. a pruner: use ``fedfpzo`` (whose ``pruner`` also gives the random,
    magnitude and SNIP baselines).
    """

    name = "zo"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10, queries: int = 20,
                 density: float = 1.0, uplink: str = "delta", sparse_format: str = "dense_bitmap",
                 lr: float = 0.002, mu: float = 1e-3, clip: float | None = None,
                 local_epochs: float | None = None, epoch: str = "one_pass",
                 input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        self._init_task(model, batch_size, local_steps)
        self.queries = _checks.positive_int("queries", queries)
        self.density = _checks.density("density", density)
        self.uplink = _checks.choice("uplink", uplink, UPLINKS)
        self.sparse_format = _checks.choice("sparse_format", sparse_format, SPARSE_FORMATS)
        self.mu = _checks.positive_float("mu", mu)
        self.clip = None if clip is None else _checks.positive_float("clip", clip)
        self._init_learning(lr, local_epochs, input_shape, num_classes, epoch)
        self._profile: ModelProfile | None = None
        self._fixup_fraction: float | None = None

    def init(self, seed: int) -> ModelState:
        if self.density != 1.0:
            raise ValueError("zo: learning mode needs density 1 (zo has no pruner); use fedfpzo with "
                             "pruner ntk, random, magnitude or snip for a sparse model")
        return super().init(seed)

    def fit(self, state: ModelState, config: TaskConfig, data: ClientData, seed: int) -> ClientResult:
        result = zo_update(self.functional_model, state, data, config.local_steps, config.batch_size, self.lr,
                           self.queries, self.mu, self.clip, seed, self.partial_batches(config))
        return keep_uplink(result, self.uplink)

    def batched_kernel(self, config: TaskConfig) -> ZerothOrderKernel | None:
        if config.phase != "train":
            return None
        return ZerothOrderKernel(self.functional_model, self.lr, self.queries, self.mu, self.clip, self.uplink,
                                 partial=self.partial_batches(config))

    def update_shape(self, config: TaskConfig) -> UpdateShape:
        if config.phase == "train" and self.uplink == "seeds":
            return UpdateShape("seeds", config.local_steps * self.queries)
        return super().update_shape(config)

    def delta_of(self, state: ModelState, result: ClientResult) -> torch.Tensor:
        """The client's delta; a seed-pair result's is replayed (``local.replay_seed_pairs``, bit-identical)."""
        if result.kind == "seeds" and result.delta is None:
            return replay_seed_pairs(state, result.seeds, result.coefficients)
        return result.delta

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one ZO training task (see the module docstring); other phases raise ValueError."""
        self.check_config(config)
        return self._train_demand(config)

    @property
    def fixup_fraction(self) -> float:
        """Share of coordinates the exact seed trick must record at this ``mu``, measured once on this model's
        initial weights (``local.fixup_fraction``): the cost model charges 12 bytes for each."""
        if self._fixup_fraction is None:
            self._fixup_fraction = fixup_fraction(self.functional_model.init_weights(0), self.mu)
        return self._fixup_fraction

    def _train_demand(self, config: TaskConfig) -> ResourceDemand:
        profile, density = self.profile, self.density
        if self.uplink == "seeds":
            up = seed_pairs_bytes(self.queries, config.local_steps)
        else:
            up = sparse_values_bytes(profile, density)
        return ResourceDemand(
            peak_memory_bytes=zo_peak_memory_bytes(profile, config.batch_size, density, self.sparse_format,
                                                   self.fixup_fraction),
            flops=zo_task_flops(profile, config.trained_samples, config.local_steps, self.queries, density),
            bytes_down=model_payload_bytes(profile, density),
            bytes_up=up,
        )

    def _fields(self) -> str:
        return (f"model={self.model!r}, batch_size={self.batch_size}, local_steps={self.local_steps}, "
                f"queries={self.queries}, density={self.density}, uplink={self.uplink!r}, "
                f"sparse_format={self.sparse_format!r}, lr={self.lr}, mu={self.mu}, clip={self.clip}, "
                f"local_epochs={self.local_epochs}, epoch={self.epoch!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields()})"


class FedFPZO(ZerothOrder):
    """Federated NTK foresight pruning, then zeroth-order training on the sparse model."""

    name = "fedfpzo"
    phases = ("train", "prune")

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10, queries: int = 20,
                 density: float = 0.1, uplink: str = "delta", sparse_format: str = "csr",
                 prune_on: str = "server", prune_samples: int = 1, prune_iters: int = 1,
                 pruner: str = "ntk", prune_data: str = "free", ntk_eps: float = 0.01,
                 lr: float = 0.002, mu: float = 1e-3, clip: float | None = None,
                 local_epochs: float | None = None, epoch: str = "one_pass",
                 input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE,
                 num_classes: int = DEFAULT_NUM_CLASSES) -> None:
        super().__init__(model, batch_size, local_steps, queries, density, uplink, sparse_format, lr, mu,
                         clip, local_epochs, epoch, input_shape, num_classes)
        self.prune_on = _checks.choice("prune_on", prune_on, PRUNE_SITES)
        self.prune_samples = _checks.positive_int("prune_samples", prune_samples)
        self.prune_iters = _checks.positive_int("prune_iters", prune_iters)
        self.pruner = _checks.choice("pruner", pruner, PRUNERS)
        self.prune_data = _checks.choice("prune_data", prune_data, PRUNE_DATA)
        self.ntk_eps = _checks.positive_float("ntk_eps", ntk_eps)
        if self.prune_on == "server" and (self.pruner == "snip" or self.prune_data == "local"):
            raise ValueError("prune_on 'server' has no training data: snip and prune_data 'local' need "
                             "prune_on 'clients'")

    def task(self, round_index: int, state: ModelState | None = None) -> TaskConfig:
        """Phase ``'prune'`` (``local_steps`` = scoring draws) while the client-side pruning schedule is
        unfinished, phase ``'train'`` after. The schedule's progress is the state's ``prune_step`` in learning
        mode (a round that failed its quorum does not advance it), the round index in timing mode."""
        _checks.non_negative_int("round_index", round_index)
        done = round_index if state is None else state.prune_step
        if self.prune_on == "clients" and done < self.prune_iters:
            return TaskConfig("prune", self.prune_samples, self.batch_size)
        return TaskConfig("train", self.local_steps, self.batch_size)

    def init(self, seed: int) -> ModelState:
        """Dense weights from ``seed``; with ``prune_on="server"`` the whole data-free schedule runs here."""
        from algorithms.pruning import prune

        weights = self.functional_model.init_weights(seed)
        if self.prune_on == "clients":
            return ModelState(weights)
        mask = prune(self.pruner, self.functional_model, weights, self.density, self.prune_iters,
                     seed=derive_seed(seed, _PRUNE_PURPOSE), batch_size=self.batch_size,
                     samples=self.prune_samples)
        return ModelState(weights * mask, mask, self.prune_iters)

    def fit(self, state: ModelState, config: TaskConfig, data: ClientData, seed: int) -> ClientResult:
        if config.phase == "train":
            return super().fit(state, config, data, seed)
        from algorithms.pruning import saliency

        batch = None
        if self.prune_data == "local" or self.pruner == "snip":
            take = batch_plan(len(data), config.batch_size, 1, seed)[0]  # one seeded batch of local data
            batch = (data.x[take], data.y[take])
        scores = saliency(self.pruner, self.functional_model, state.weights, state.mask, seed=seed,
                          batch_size=config.batch_size, samples=config.local_steps, eps=self.ntk_eps,
                          data=batch)
        return ClientResult("scores", len(data), scores=scores)

    def aggregate(self, state: ModelState, results: Sequence[ClientResult],
                  weights: Sequence[float]) -> ModelState:
        """Scores (phase ``'prune'``) advance the mask one schedule step: S = sum_k w_k S_k
        (``aggregate.score_sum``), with w_k the clients' sample shares in data mode and uniform when
        data-free, then a global top-k at the step's density. Deltas (phase ``'train'``) are averaged as
        in ``zo``."""
        from algorithms.pruning import density_schedule, mask_from_scores

        scored = [r for r in results if r.kind == "scores"]
        trained = [(r, w) for r, w in zip(results, weights) if r.kind != "scores"]
        if trained:
            state = super().aggregate(state, [r for r, _ in trained], [w for _, w in trained])
        if scored and state.prune_step < self.prune_iters:
            uses_data = self.prune_data == "local" or self.pruner == "snip"
            score = score_sum([r.scores for r in scored], [float(r.num_samples) if uses_data else 1.0
                                                            for r in scored])
            target = density_schedule(self.density, self.prune_iters)[state.prune_step]
            mask = mask_from_scores(score, self.functional_model.layout, target, state.mask)
            state = ModelState(state.weights * mask, mask, state.prune_step + 1)
        return state

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one client task: NTK scoring in phase ``'prune'``, sparse ZO training in ``'train'``."""
        self.check_config(config)
        if config.phase == "train":
            return self._train_demand(config)
        profile = self.profile
        return ResourceDemand(
            peak_memory_bytes=ntk_scoring_memory_bytes(profile, config.batch_size),
            flops=ntk_scoring_flops(profile, config.batch_size, config.local_steps),
            bytes_down=mask_bytes(profile),
            bytes_up=score_payload_bytes(profile),
        )

    def server_demand(self) -> ResourceDemand | None:
        """The server's bill for the whole pruning (all ``prune_iters`` steps, no payloads) when
        ``prune_on == "server"``; ``None`` when clients prune (their tasks carry the cost)."""
        if self.prune_on != "server":
            return None
        profile = self.profile
        return ResourceDemand(
            peak_memory_bytes=ntk_scoring_memory_bytes(profile, self.batch_size),
            flops=self.prune_iters * ntk_scoring_flops(profile, self.batch_size, self.prune_samples),
            bytes_down=0,
            bytes_up=0,
        )

    def _fields(self) -> str:
        return (f"{super()._fields()}, prune_on={self.prune_on!r}, prune_samples={self.prune_samples}, "
                f"prune_iters={self.prune_iters}, pruner={self.pruner!r}, prune_data={self.prune_data!r}")
