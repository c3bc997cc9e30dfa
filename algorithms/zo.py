"""Zeroth-order (BP-free) federated training, dense or on a pruned mask, and FedFPZO.

``ZerothOrder`` timing contract: one task is ``local_steps`` central-difference ZO steps with ``queries``
directions each, on the kept coordinates of a mask of ``density`` (MeZO seed trick: memory stays at inference
level).

* peak memory: ``cost.zo_peak_memory_bytes``; FLOPs: ``local_steps * cost.zo_step_flops``;
* downlink: ``cost.model_payload_bytes`` (dense, or kept values plus the mask);
* uplink ``"delta"``: ``cost.sparse_values_bytes`` (the server knows the mask); uplink ``"seeds"``:
  ``cost.seed_pairs_bytes(queries, local_steps)``, one (seed, projected difference) pair per query per step,
  which the server replays.

``FedFPZO`` (arXiv 2405.04765) first prunes with federated NTK-SAP saliency, then trains as ``ZerothOrder``
at ``density`` (default 0.1, stored ``"csr"`` by default: a bitmap-masked dense tensor saves no memory, and
the paper's memory reduction assumes the pruned weights are not stored).

``prune_on="server"`` (default, data-free): the server scores, clients only ever see phase ``'train'``, and
``server_prune_demand()`` gives the server's bill. ``prune_on="clients"``: rounds
``0 .. prune_iters-1`` are phase ``'prune'`` (one round per iterative-pruning step, since the federated score
must be aggregated before the next re-scoring), each scoring ``prune_samples`` weight draws of one batch:

* peak memory ``cost.ntk_scoring_memory_bytes`` (BP-level), FLOPs ``cost.ntk_scoring_flops``;
* downlink the current mask (``cost.mask_bytes``; weights are re-drawn from seeds, data-free);
* uplink the scores (``cost.score_payload_bytes``, one float per prunable weight).
"""

from __future__ import annotations

from algorithms import _checks
from algorithms.base import Algorithm, ResourceDemand, TaskConfig
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
    zo_step_flops,
)
from algorithms.models import MODELS
from algorithms.profiling import ModelProfile, ProfiledModel

__all__ = ["ZerothOrder", "FedFPZO", "UPLINKS", "PRUNE_SITES"]

UPLINKS = ("delta", "seeds")
PRUNE_SITES = ("server", "clients")


class ZerothOrder(ProfiledModel, Algorithm):
    """Federated ZO-SGD with central differences and the MeZO seed trick; dense when ``density == 1``."""

    name = "zo"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10, queries: int = 20,
                 density: float = 1.0, uplink: str = "delta", sparse_format: str = "dense_bitmap") -> None:
        self.model = _checks.choice("model", model, sorted(MODELS))
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.local_steps = _checks.positive_int("local_steps", local_steps)
        self.queries = _checks.positive_int("queries", queries)
        self.density = _checks.density("density", density)
        self.uplink = _checks.choice("uplink", uplink, UPLINKS)
        self.sparse_format = _checks.choice("sparse_format", sparse_format, SPARSE_FORMATS)
        self._profile: ModelProfile | None = None

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one ZO training task (see the module docstring); other phases raise ValueError."""
        self._check_config(config, ("train",))
        return self._train_demand(config)

    def _check_config(self, config: object, phases: tuple[str, ...]) -> None:
        if not isinstance(config, TaskConfig) or config.phase not in phases:
            raise ValueError(f"config must be a TaskConfig of phase {' or '.join(phases)} for {self.name}, "
                             f"got {config!r}")

    def _train_demand(self, config: TaskConfig) -> ResourceDemand:
        profile, density = self.profile, self.density
        if self.uplink == "seeds":
            up = seed_pairs_bytes(self.queries, config.local_steps)
        else:
            up = sparse_values_bytes(profile, density)
        return ResourceDemand(
            peak_memory_bytes=zo_peak_memory_bytes(profile, config.batch_size, density, self.sparse_format),
            flops=config.local_steps * zo_step_flops(profile, config.batch_size, self.queries, density),
            bytes_down=model_payload_bytes(profile, density),
            bytes_up=up,
        )

    def _fields(self) -> str:
        return (f"model={self.model!r}, batch_size={self.batch_size}, local_steps={self.local_steps}, "
                f"queries={self.queries}, density={self.density}, uplink={self.uplink!r}, "
                f"sparse_format={self.sparse_format!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields()})"


class FedFPZO(ZerothOrder):
    """Federated NTK foresight pruning, then zeroth-order training on the sparse model."""

    name = "fedfpzo"

    def __init__(self, model: str = "cnn", batch_size: int = 32, local_steps: int = 10, queries: int = 20,
                 density: float = 0.1, uplink: str = "delta", sparse_format: str = "csr",
                 prune_on: str = "server", prune_samples: int = 1, prune_iters: int = 1) -> None:
        super().__init__(model, batch_size, local_steps, queries, density, uplink, sparse_format)
        self.prune_on = _checks.choice("prune_on", prune_on, PRUNE_SITES)
        self.prune_samples = _checks.positive_int("prune_samples", prune_samples)
        self.prune_iters = _checks.positive_int("prune_iters", prune_iters)

    def configure_task(self, round_index: int) -> TaskConfig:
        """Phase ``'prune'`` (``local_steps`` = scoring draws) for the first ``prune_iters`` rounds when
        clients prune; phase ``'train'`` otherwise."""
        _checks.non_negative_int("round_index", round_index)
        if self.prune_on == "clients" and round_index < self.prune_iters:
            return TaskConfig("prune", self.prune_samples, self.batch_size)
        return TaskConfig("train", self.local_steps, self.batch_size)

    def demand(self, config: TaskConfig) -> ResourceDemand:
        """Cost of one client task: NTK scoring in phase ``'prune'``, sparse ZO training in ``'train'``."""
        self._check_config(config, ("train", "prune"))
        if config.phase == "train":
            return self._train_demand(config)
        profile = self.profile
        return ResourceDemand(
            peak_memory_bytes=ntk_scoring_memory_bytes(profile, config.batch_size),
            flops=ntk_scoring_flops(profile, config.batch_size, config.local_steps),
            bytes_down=mask_bytes(profile),
            bytes_up=score_payload_bytes(profile),
        )

    def server_prune_demand(self) -> ResourceDemand | None:
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
                f"prune_iters={self.prune_iters}")
