"""The algorithm interface: task, demand and update records, and the two sides (cost, learning)."""

import pytest

from algorithms.base import Algorithm, CostModel, Learner, ResourceDemand, TaskConfig, UpdateShape


def test_task_config_accepts_both_phases():
    assert TaskConfig("train", 10, 32).phase == "train"
    assert TaskConfig("prune", 1, 32).local_steps == 1


@pytest.mark.parametrize("args, field", [
    (("eval", 1, 1), "phase"),
    (("train", 0, 1), "local_steps"),
    (("train", 1, 0), "batch_size"),
    (("train", True, 1), "local_steps"),
])
def test_task_config_rejects_bad_fields(args, field):
    with pytest.raises(ValueError, match=field):
        TaskConfig(*args)


@pytest.mark.parametrize("field", ["peak_memory_bytes", "flops", "bytes_down", "bytes_up"])
def test_resource_demand_rejects_negative_or_float(field):
    values = {"peak_memory_bytes": 1, "flops": 1, "bytes_down": 0, "bytes_up": 0}
    with pytest.raises(ValueError, match=field):
        ResourceDemand(**{**values, field: -1})
    with pytest.raises(ValueError, match=field):
        ResourceDemand(**{**values, field: 1.5})


class _Minimal(CostModel):
    """A cost model alone: what a timing-only algorithm writes."""

    name = "minimal"

    def task(self, round_index, state=None):
        return TaskConfig("train", 1, 1)

    def demand(self, config):
        self.check_config(config)
        return ResourceDemand(1, 1, 0, 0)


class _Echo(Learner):
    """The learning side alone, on plain numbers: the state is a float, a result the data plus the seed."""

    def init(self, seed):
        return float(seed)

    def fit(self, state, config, data, seed):
        return state + data + seed

    def aggregate(self, state, results, weights):
        return state + sum(w * r for r, w in zip(results, weights))

    def evaluate(self, state, x, y):
        return {"accuracy": 1.0, "loss": 0.0}

    def update_shape(self, config):
        return UpdateShape("delta")


def test_both_sides_are_abstract():
    for cls in (CostModel, Learner, Algorithm):
        with pytest.raises(TypeError):
            cls()


def test_a_cost_model_alone_is_not_a_learner_and_has_no_server_bill():
    algorithm = _Minimal()
    assert not isinstance(algorithm, Learner)
    assert algorithm.server_demand() is None
    assert algorithm.phases == ("train",)
    with pytest.raises(ValueError, match="phase 'train' for minimal"):
        algorithm.demand(TaskConfig("prune", 1, 1))


def test_a_learner_runs_without_a_kernel_by_default():
    learner = _Echo()
    config = TaskConfig("train", 5, 32)
    assert learner.batched_kernel(config) is None
    assert learner.fit(learner.init(2), config, 10, 1) == 13.0


def test_fit_config_shrinks_the_batch_to_the_clients_data():
    learner = _Echo()
    config = TaskConfig("train", 5, 32)
    assert learner.fit_config(config, 100) is config
    assert learner.fit_config(config, 7) == TaskConfig("train", 5, 7)


@pytest.mark.parametrize("kind, pairs, ok", [
    ("delta", 0, True), ("scores", 0, True), ("seeds", 40, True),
    ("seeds", 0, False), ("delta", 3, False), ("weights", 0, False)])
def test_update_shape_ties_seed_pairs_to_the_seeds_kind(kind, pairs, ok):
    if ok:
        assert UpdateShape(kind, pairs).seed_pairs == pairs
    else:
        with pytest.raises(ValueError, match="UpdateShape"):
            UpdateShape(kind, pairs)
