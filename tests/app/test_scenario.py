"""Scenario validation: each kind of bad input names the field; --set overrides."""

from __future__ import annotations

import pytest

from fleet.app.scenario import ScenarioError, apply_override, load_scenario, parse_scenario

GOOD_MIX = [{"device_class": "rpi4_4gb", "link_class": "wifi", "fraction": 1.0}]


def _error(data, overrides=()):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, list(overrides), "s.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_make_a_valid_scenario():
    scenario = parse_scenario({})
    assert scenario.fleet.devices > 0 and scenario.coordinator.mode == "sync"


@pytest.mark.parametrize("data, field, words", [
    ({"fleet": {"devices": "many"}}, "fleet.devices", "integer"),
    ({"fleet": {"devics": 10}}, "fleet.devics", "not permitted"),
    ({"fleet": {"mix": [{**GOOD_MIX[0], "device_class": "toaster"}]}},
     "fleet.mix.0.device_class", "unknown device class 'toaster'"),
    ({"fleet": {"mix": [{**GOOD_MIX[0], "link_class": "carrier_pigeon"}]}},
     "fleet.mix.0.link_class", "unknown link class 'carrier_pigeon'"),
    ({"network": {"gateways": {"cell": {"backhaul_bit_per_s": -5}}}},
     "network.gateways.cell.backhaul_bit_per_s", "greater than or equal to 1"),
    ({"fleet": {"mix": [{**GOOD_MIX[0], "fraction": 0.6},
                        {**GOOD_MIX[0], "fraction": 0.6}]}}, "fleet.mix", "sum to 1.2"),
    ({"fleet": {"mix": [{**GOOD_MIX[0], "fraction": -0.5}]}}, "fleet.mix.0.fraction",
     "greater than or equal to 0"),
    ({"coordinator": {"mode": "gossip"}}, "coordinator.mode", "'sync', 'fedbuff' or 'fedasync'"),
    ({"algorithm": {"name": "sgd-magic"}}, "algorithm.name", "unknown algorithm"),
    ({"mode": "replay"}, "mode", "'timing' or 'learning'"),
    ({"devices": {"slowdown_sigma": -1}}, "devices.slowdown_sigma", "greater than or equal"),
])
def test_bad_input_names_the_field(data, field, words):
    message = _error(data)
    assert message.startswith(f"s.yaml: {field}: "), message
    assert words in message


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fleet: [unclosed\n")
    with pytest.raises(ScenarioError, match="not valid YAML at line"):
        load_scenario(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(top)


def test_overrides_set_nested_keys_and_list_items():
    data = {"fleet": {"mix": [dict(GOOD_MIX[0])]}}
    apply_override(data, "fleet.mix.0.fraction=1.0")
    apply_override(data, "coordinator.rounds=3")
    apply_override(data, "coordinator.deadline_s=null")
    assert data["coordinator"] == {"rounds": 3, "deadline_s": None}
    scenario = parse_scenario(data)
    assert scenario.coordinator.rounds == 3 and scenario.coordinator.deadline_s is None


@pytest.mark.parametrize("assignment, words", [
    ("coordinator.rounds", "expected path.to.key=value"),
    ("fleet.mix.7.fraction=1", "not an index"),
    ("seed=1.5.x=2", "seed"),
])
def test_bad_overrides_are_clear(assignment, words):
    assert words in _error({"fleet": {"mix": GOOD_MIX}}, [assignment])


def test_algorithm_parameters_are_checked_at_load_time():
    assert "batch" in _error({"algorithm": {"name": "fedavg", "params": {"batch": 3}}})


def test_link_override_is_bounded_and_reaches_the_mix_entry():
    mix = [{**GOOD_MIX[0], "link": {"loss_prob": 0.99, "latency_s": 2.5}}]
    entry = parse_scenario({"fleet": {"mix": mix}}).fleet.mix[0]
    assert entry.link.figures() == {"loss_prob": 0.99, "latency_s": 2.5}
    message = _error({"fleet": {"mix": [{**GOOD_MIX[0], "link": {"loss_prob": 0.995}}]}})
    assert message.startswith("s.yaml: fleet.mix.0.link.loss_prob: "), message
    assert "less than or equal to 0.99" in message
    assert "fleet.mix.0.link.duty_cycle" in _error({"fleet": {"mix": [{**GOOD_MIX[0],
                                                                       "link": {"duty_cycle": 1}}]}})
