"""Fuzzing the schema: every mutation of every shipped scenario exits 0, or 2 with one line.

Mutations reach every field of the pydantic models (their paths are read off ``Scenario``), and set
wrong types, negatives, huge and tiny numbers, NaN and infinities, empty lists, unicode, deleted keys,
and YAML alias bombs. Runs go through the CLI, shortened (a few devices, one or two rounds, timing
mode; learning-mode mutations are validated only) so each takes well under a second.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fleet.app.run import main
from fleet.app.scenario import Scenario, ScenarioError, load_variants, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
CAPS = {"fleet.devices": 24, "coordinator.rounds": 2, "coordinator.clients_per_round": 8,
        "coordinator.concurrency": 8, "coordinator.buffer_size": 4, "max_sim_time_s": 1e5}
BOMB_ANCHORS = "\n".join(["b0: &b0 [x, x, x, x, x, x, x, x, x]"] + [
    f"b{i}: &b{i} [{', '.join([f'*b{i - 1}'] * 9)}]" for i in range(1, 9)])


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field path of ``model``, nested models included (list items as index 0)."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        ann = info.annotation
        if typing.get_origin(ann) is list:
            out.extend(_paths(typing.get_args(ann)[0], f"{path}.0."))
            continue
        for t in [ann, *typing.get_args(ann)]:  # the model itself, or inside "Model | None"
            if isinstance(t, type) and issubclass(t, BaseModel):
                out.extend(_paths(t, f"{path}."))
    return out


FIELDS = _paths(Scenario) + ["algorithm.params.batch_size", "algorithm.params.lr",
                             "algorithm.params.model", "algorithm.params.density",
                             "network.gateways.cell.channels", "variants"]
BAD = st.one_of(
    st.sampled_from([None, True, "", "many", "ü∂ℝ🙂\u202e", [], {}, [1, 2], {"x": 1}, 0, -1, -1e-9,
                     1e-300, 1e-305, 5e-324, 1e308, -1e308, 10**18, 10**30, 2**63, float("nan"),
                     float("inf"), float("-inf"), 0.5, 1, 3, 300, "1e9", "1e-300", "BOMB", "DELETE"]),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=20))


def _set(data, path: str, value) -> bool:
    """Put ``value`` at ``path`` (creating mappings; ``DELETE`` removes the key); False if impossible."""
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        if isinstance(node, list):
            if not node:
                return False
            node = node[0]
            continue
        if not isinstance(node, dict):
            return False
        node = node.setdefault(key, {})
    if isinstance(node, list):
        node = node[0] if node else None
    if not isinstance(node, dict):
        return False
    if value == "DELETE":
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return True


def _shorten(data: dict, touched: set[str]) -> list[str]:
    """Clamp valid-but-slow numbers, and the ``--set`` overrides that shorten what was not touched."""
    overrides = []
    for path, cap in CAPS.items():
        if path in touched:
            section, key = path.rsplit(".", 1) if "." in path else ("", path)
            node = data.get(section, {}) if section else data
            value = node.get(key) if isinstance(node, dict) else None
            if type(value) in (int, float) and value == value and value > cap:
                node[key] = type(value)(cap)
        else:
            overrides += ["--set", f"{path}={cap}"]
    data.pop("bridge", None)
    if isinstance(data.get("variants"), dict):
        data["variants"] = dict(list(data["variants"].items())[:2])
    if "mode" not in touched:
        overrides += ["--set", "mode=timing"]
    return overrides


def _write(path: Path, data) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    if "BOMB" in text:
        text = BOMB_ANCHORS + "\n" + text.replace("BOMB", "*b8")
    path.write_text(text)


def _check_case(tmp_path: Path, capsys, scenario: Path, mutations: list[tuple[str, object]]) -> None:
    data = yaml.safe_load(scenario.read_text())
    touched = {p for p, v in mutations if _set(data, p, copy.deepcopy(v))}
    overrides = _shorten(data, touched)
    path = tmp_path / "fuzz.yaml"
    _write(path, data)
    learning = "mode" in touched and data.get("mode") == "learning"
    if learning:  # validated only: training is not for a fuzz test
        capsys.readouterr()
        try:
            load_variants(path, overrides)
        except ScenarioError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600
        return
    capsys.readouterr()
    status = main([str(path), "--out", str(tmp_path / "out"), "--quiet", "--no-figures", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "scenario warning:" not in line]
    assert status in (0, 2), (mutations, err)
    if status == 2:
        assert len(errors) == 1 and "Traceback" not in errors[0] and len(errors[0]) < 600, (mutations, err)


def _mutations(n_max: int):
    return st.lists(st.tuples(st.sampled_from(FIELDS), BAD), min_size=1, max_size=n_max)


_FAST = settings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_FAST
@given(scenario=st.sampled_from(SCENARIOS), mutations=_mutations(3))
def test_mutated_scenarios_exit_0_or_2_with_one_line(tmp_path, capsys, scenario, mutations):
    _check_case(tmp_path, capsys, scenario, mutations)


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario=st.sampled_from(SCENARIOS), mutations=_mutations(6))
def test_mutated_scenarios_exit_0_or_2_with_one_line_many(tmp_path, capsys, scenario, mutations):
    _check_case(tmp_path, capsys, scenario, mutations)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(mutations=_mutations(8))
def test_any_values_in_any_fields_validate_or_fail_in_one_line(mutations):
    """Straight over the pydantic models: a Scenario, or one short ScenarioError line."""
    data: dict = {}
    for path, value in mutations:
        _set(data, path, value if value != "BOMB" else [[1] * 9] * 9)
    try:
        parse_scenario(data, [], "s.yaml")
    except ScenarioError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
