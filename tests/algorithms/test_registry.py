"""The package surface and the lazy registry."""

import subprocess
import sys

import pytest

import algorithms
from algorithms import ALGORITHMS, create_algorithm
from algorithms.registry import check_params


def test_all_lists_exactly_the_public_names():
    assert sorted(algorithms.__all__) == sorted(
        ["ALGORITHMS", "PHASES", "Algorithm", "CostModel", "Learner", "ResourceDemand", "TaskConfig",
         "UpdateShape", "create_algorithm", "load_algorithm_class"])
    for name in algorithms.__all__:
        assert hasattr(algorithms, name)


def test_importing_the_package_does_not_import_torch():
    code = "import sys, algorithms; algorithms.ALGORITHMS; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name, class_name", [
    ("fedavg", "FedAvg"), ("fedprox", "FedProx"), ("zo", "ZerothOrder"), ("fedfpzo", "FedFPZO")])
def test_create_algorithm_builds_each_entry(name, class_name):
    algorithm = create_algorithm(name)
    assert type(algorithm).__name__ == class_name
    assert algorithm.name == name
    assert isinstance(algorithm, algorithms.Algorithm)


def test_registry_entries_are_module_colon_class():
    assert set(ALGORITHMS) == {"fedavg", "fedprox", "zo", "fedfpzo", "fedmef", "autoprune"}
    assert all(entry.startswith("algorithms.") and ":" in entry for entry in ALGORITHMS.values())


def test_unknown_algorithm_lists_valid_names():
    with pytest.raises(ValueError, match="autoprune, fedavg, fedfpzo, fedmef, fedprox, zo"):
        create_algorithm("scaffold")


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="'learning_rate'"):
        create_algorithm("zo", queries=5, learning_rate=0.1)


def test_bad_value_is_a_value_error_naming_the_field():
    with pytest.raises(ValueError, match="queries"):
        create_algorithm("zo", queries=0)
    with pytest.raises(ValueError, match="model"):
        create_algorithm("fedavg", model="vgg")


def test_parameters_reach_the_algorithm():
    algorithm = create_algorithm("fedfpzo", model="mlp", prune_on="clients", density=0.2)
    assert (algorithm.model, algorithm.prune_on, algorithm.density) == ("mlp", "clients", 0.2)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_declared_parameters_are_the_class_keyword_arguments(name):
    """``PARAMETERS`` checks a scenario without importing the class: it must list exactly what the class
    takes (less what the dataset sets)."""
    import inspect

    from algorithms.registry import DATASET_PARAMS, PARAMETERS, load_algorithm_class

    signature = inspect.signature(load_algorithm_class(name)).parameters
    assert set(PARAMETERS[name]) == set(signature) - set(DATASET_PARAMS)


def test_an_unquoted_yaml_off_gets_a_hint():
    with pytest.raises(ValueError, match="bae must be one of on, off, got False .*write it quoted"):
        check_params("fedmef", {"bae": False})
