"""The algorithm interface: task and demand records, and the learning-plane placeholders."""

import pytest

from algorithms.base import Algorithm, ResourceDemand, TaskConfig


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


class _Minimal(Algorithm):
    name = "minimal"

    def configure_task(self, round_index):
        return TaskConfig("train", 1, 1)

    def demand(self, config):
        return ResourceDemand(1, 1, 0, 0)


def test_algorithm_is_abstract():
    with pytest.raises(TypeError):
        Algorithm()


def test_learning_plane_hooks_say_to_run_in_timing_mode():
    algorithm = _Minimal()
    calls = [
        lambda: algorithm.initial_state(0),
        lambda: algorithm.local_update(None, TaskConfig("train", 1, 1), None, 0),
        lambda: algorithm.aggregate(None, [], []),
        lambda: algorithm.evaluate(None, None, None),
    ]
    for call in calls:
        with pytest.raises(NotImplementedError, match="mode: timing"):
            call()


def test_client_task_shrinks_the_batch_to_the_clients_data():
    algorithm = _Minimal()
    config = TaskConfig("train", 5, 32)
    assert algorithm.client_task(config, 100) is config
    assert algorithm.client_task(config, 7) == TaskConfig("train", 5, 7)
