"""Review fixes of the scenario loader: gateway specs laid over the defaults, YAML 1.2 exponent floats, empty
files and duplicate keys refused, bridge bounds; each through the loader and the CLI (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devices import GATEWAY_KINDS
from fleet.app.json_schema import scenario_json_schema
from fleet.app.run import main
from fleet.app.scenario import ScenarioError, apply_override, load_scenario, load_variants, parse_scenario, yaml_text
from fleet.app.schema import GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "scenarios/smoke.yaml"
DEFAULT_GATEWAYS = parse_scenario({}).network.gateways
KNOWN_KINDS = "'switch', 'access_point', 'cell', 'lora_gateway' or 'ble_gateway'"


def _cli_error(capsys, monkeypatch, tmp_path, args) -> str:
    """The one stderr line of ``fleet.run ARGS --dry-run``, which must exit 2 and print nothing on stdout."""
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--dry-run"]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith("fleet.run: scenario error: ")
    return lines[0].removeprefix("fleet.run: scenario error: ")


def _file(tmp_path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# 1. Gateway specs are laid over the defaults, per kind and per field; an unknown kind is refused.

def test_one_gateway_field_changes_only_that_field_of_that_kind():
    gateways = parse_scenario({"network": {"gateways": {"access_point": {"channels": 2}}}}).network.gateways
    assert list(gateways) == ["switch", "access_point", "cell", "lora_gateway", "ble_gateway"]
    assert gateways["access_point"] == GatewayConfig(devices_per_gateway=30, channels=2, backhaul_latency_s=0.01,
                                                     backhaul_bit_per_s=1e9)
    assert {k: v for k, v in gateways.items() if k != "access_point"} == \
        {k: v for k, v in DEFAULT_GATEWAYS.items() if k != "access_point"}
    assert gateways["ble_gateway"] == GatewayConfig(devices_per_gateway=20, channels=1, backhaul_latency_s=0.02,
                                                    backhaul_bit_per_s=1e8)


def test_set_file_and_python_gateway_specs_agree(tmp_path):
    by_set = load_scenario(SMOKE, ["network.gateways.lora_gateway.backhaul_bit_per_s=5e6"])
    path = _file(tmp_path, SMOKE.read_text() + "network:\n  gateways:\n    lora_gateway: {backhaul_bit_per_s: 5e6}\n")
    by_file = load_scenario(path)
    given = GatewayConfig(devices_per_gateway=9)  # a whole spec object is taken as it is
    by_object = parse_scenario({"network": {"gateways": {"lora_gateway": given}}}).network.gateways
    assert by_set.network == by_file.network
    assert by_set.network.gateways["lora_gateway"] == GatewayConfig(
        devices_per_gateway=500, channels=8, backhaul_latency_s=0.05, backhaul_bit_per_s=5e6)
    assert by_object["lora_gateway"] is given and by_object["cell"] == DEFAULT_GATEWAYS["cell"]


def test_the_gateway_kinds_are_the_link_classes_kinds():
    assert set(DEFAULT_GATEWAYS) == GATEWAY_KINDS


def test_one_gateway_setting_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [str(SMOKE), "--set", "network.gateways.access_point.channels=2", "--set", "coordinator.rounds=1"]
    assert main([*args, "--dry-run"]) == 0
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet", "--no-figures"]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "out" / "summary.json").is_file()


@pytest.mark.parametrize("setting", ["network.gateways.acess_point.channels=2", "network.gateways.wifi={}"])
def test_an_unknown_gateway_kind_is_one_line_exit_2(tmp_path, monkeypatch, capsys, setting):
    kind = setting.split(".")[2].split("=")[0]
    assert _cli_error(capsys, monkeypatch, tmp_path, [str(SMOKE), "--set", setting]) == \
        f"{SMOKE}: network.gateways.{kind}: unknown key; known: {KNOWN_KINDS}"


def test_the_json_schema_lists_the_gateway_kinds():
    jsonschema = pytest.importorskip("jsonschema")
    schema = scenario_json_schema()
    gateways = schema["$defs"]["NetworkConfig"]["properties"]["gateways"]
    assert gateways["propertyNames"] == {"enum": ["switch", "access_point", "cell", "lora_gateway", "ble_gateway"]}
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"network": {"gateways": {"cell": {"channels": 3}}}})
    assert not validator.is_valid({"network": {"gateways": {"acess_point": {"channels": 3}}}})


# 2. YAML 1.2 exponent floats are numbers; quoted strings stay strings.

def test_exponent_floats_in_a_file_are_numbers(tmp_path):
    path = _file(tmp_path, "fleet: {devices: 1e3}\nalgorithm:\n  name: fedavg\n  params: {lr: 1e-3}\n"
                           "coordinator: {deadline_s: 5E+2, over_selection: .5e-1, max_idle_s: +1.5e4}\n")
    scenario = load_scenario(path)
    assert scenario.fleet.devices == 1000 and type(scenario.fleet.devices) is int
    assert scenario.algorithm.params["lr"] == 0.001
    c = scenario.coordinator
    assert (c.deadline_s, c.over_selection, c.max_idle_s) == (500.0, 0.05, 15_000.0)


def test_exponent_floats_in_set_are_numbers():
    scenario = load_scenario(SMOKE, ["algorithm.params.lr=5e-3", "fleet.devices=2E2"])
    assert scenario.algorithm.params["lr"] == 0.005 and scenario.fleet.devices == 200


def test_quoted_exponents_stay_strings(tmp_path):
    assert load_scenario(_file(tmp_path, "name: '1e3'\n")).name == "1e3"
    data: dict = {}
    apply_override(data, 'name="5e-3"')
    assert data == {"name": "5e-3"}
    for text in ("1e", "e3", "1e3x", "1_0e3", "1e3.5"):  # not numbers in YAML 1.2 either
        data = {}
        apply_override(data, f"name={text}")
        assert data == {"name": text}


def test_a_fractional_exponent_in_an_integer_field_names_it(tmp_path, monkeypatch, capsys):
    path = _file(tmp_path, "fleet: {devices: 1.5e0}\n")
    assert _cli_error(capsys, monkeypatch, tmp_path, [str(path)]) == \
        f"{path}: fleet.devices: Input should be a valid integer, got a number with a fractional part"


def test_an_exponent_learning_rate_passes_the_dry_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(SMOKE), "--dry-run", "--set", "algorithm.params.lr=5e-3"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["1e3", ".5E1", "plain", 1e-3, 2.5e20, None, True, 7, {"a": ["5e-3", 5e-3]}])
def test_yaml_text_reads_back_as_the_same_value(value):
    data: dict = {}
    apply_override(data, f"name={yaml_text(value)}")
    assert data == {"name": value} and type(data["name"]) is type(value)


# 3. An empty scenario file is refused; a top-level list or scalar already was.

@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "null\n", "~\n", "---\n"])
def test_an_empty_scenario_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys, text):
    path = _file(tmp_path, text)
    assert _cli_error(capsys, monkeypatch, tmp_path, [str(path)]) == \
        f"{path}: the file is empty: a scenario is a mapping of keys, see scenarios/smoke.yaml"
    with pytest.raises(ScenarioError, match="the file is empty"):
        load_variants(path)


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("5\n", "int"), ("hello\n", "str")])
def test_a_top_level_list_or_scalar_is_one_line_exit_2(tmp_path, monkeypatch, capsys, text, kind):
    path = _file(tmp_path, text)
    assert _cli_error(capsys, monkeypatch, tmp_path, [str(path)]) == \
        f"{path}: top level must be a mapping, got {kind}"


def test_an_explicit_empty_mapping_is_the_defaults(tmp_path):
    assert load_scenario(_file(tmp_path, "{}\n")) == parse_scenario({})


# 4. A key given twice is refused with its path and line.

@pytest.mark.parametrize("text, key, line, first", [
    ("seed: 1\nname: x\nseed: 2\n", "seed", 3, 1),
    ("fleet:\n  devices: 10\n  background_period_s: 60\n  devices: 20\n", "fleet.devices", 4, 2),
    ("fleet:\n  mix:\n    - {device_class: rpi4_4gb, link_class: wifi, fraction: 1, fraction: 0.5}\n",
     "fleet.mix.0.fraction", 3, 3),
    ("network:\n  gateways:\n    cell: {channels: 3}\n    cell: {channels: 4}\n", "network.gateways.cell", 4, 3),
    ("variants:\n  a: [seed=1]\n  a: [seed=2]\n", "variants.a", 3, 2),
])
def test_a_duplicate_key_is_one_line_exit_2(tmp_path, monkeypatch, capsys, text, key, line, first):
    path = _file(tmp_path, text)
    assert _cli_error(capsys, monkeypatch, tmp_path, [str(path)]) == \
        f"{path}: duplicate key {key} at line {line} (first given at line {first}); give each key once"


def test_a_duplicate_key_in_a_set_value_names_the_setting():
    with pytest.raises(ScenarioError) as info:
        load_scenario(SMOKE, ["fleet={devices: 10, devices: 20}"])
    assert str(info.value) == \
        "--set fleet: duplicate key fleet.devices at line 1 (first given at line 1); give each key once"


def test_a_merge_key_may_still_be_overridden(tmp_path):
    path = _file(tmp_path, "coordinator:\n  <<: {rounds: 3, quorum: 0.2}\n  rounds: 4\n")
    coordinator = load_scenario(path).coordinator
    assert (coordinator.rounds, coordinator.quorum) == (4, 0.2)


# 5. The bridge's counts and waits are bounded, the error naming the key.

BRIDGE = "mode: learning\nbridge:\n"


@pytest.mark.parametrize("key, value, words", [
    ("expect_devices", "100000000000", "Input should be less than or equal to 10000"),
    ("expect_devices", "10001", "Input should be less than or equal to 10000"),
    ("expect_devices", "0", "Input should be greater than or equal to 1"),
    ("wait_s", "86401", "Input should be less than or equal to 86400"),
    ("wait_s", "1e300", "Input should be less than or equal to 86400"),
    ("wait_s", "-1", "Input should be greater than or equal to 0"),
])
def test_a_bridge_figure_out_of_bounds_is_one_line_exit_2(tmp_path, monkeypatch, capsys, key, value, words):
    path = _file(tmp_path, f"{BRIDGE}  {key}: {value}\n")
    assert _cli_error(capsys, monkeypatch, tmp_path, [str(path)]) == f"{path}: bridge.{key}: {words}"


def test_the_bridge_bounds_are_inclusive_and_in_the_json_schema(tmp_path):
    bridge = load_scenario(_file(tmp_path, f"{BRIDGE}  expect_devices: 10000\n  wait_s: 86400\n")).bridge
    assert (bridge.expect_devices, bridge.wait_s) == (10_000, 86_400.0)
    properties = scenario_json_schema()["$defs"]["BridgeConfig"]["properties"]
    assert (properties["expect_devices"]["maximum"], properties["wait_s"]["maximum"]) == (10_000, 86_400)



def test_an_override_error_names_where_the_override_came_from(tmp_path):
    import fleet

    with pytest.raises(ScenarioError, match=r"^set 'bad': expected path.to.key=value$"):
        fleet.simulate({"name": "x"}, set=["bad"])
    with pytest.raises(ScenarioError, match=r"^--set 'bad': expected path.to.key=value$"):
        load_variants(ROOT / "scenarios/smoke.yaml", ["bad"])
    path = tmp_path / "v.yaml"
    path.write_text('name: v\nvariants:\n  a: ["nope"]\n')
    with pytest.raises(ScenarioError, match=r"v\.yaml: variants\.a: 'nope': expected path.to.key=value$"):
        load_variants(path)
