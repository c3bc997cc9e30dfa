"""``python -m fleet.run --schema``: the scenario's JSON schema, strict JSON, that every shipped scenario follows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet.app.json_schema import scenario_json_schema, schema_text
from fleet.app.run import main

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def _strict(text: str) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_schema_prints_strict_json_and_exits_0(capsys):
    assert main(["--schema"]) == 0
    out, err = capsys.readouterr()
    schema = _strict(out)
    assert err == "" and out == schema_text() + "\n" and schema == scenario_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False and {"fleet", "coordinator", "variants"} <= set(schema["properties"])
    devices = schema["$defs"]["FleetConfig"]["properties"]["devices"]
    assert devices["description"] and devices["title"] == "Devices"


def test_schema_takes_no_scenario(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--schema", "scenarios/smoke.yaml"])
    assert caught.value.code == 2 and "--schema takes no SCENARIO" in capsys.readouterr().err


def test_a_scenario_is_still_required_without_schema(capsys):
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2 and "required: scenario" in capsys.readouterr().err


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_shipped_scenario_follows_the_schema(path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = scenario_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("data, where", [
    ({"fleet": {"devices": -3}}, "devices"),
    ({"coordinator": {"colour": "blue"}}, "colour"),
    ({"variants": {"bad name": ["seed=1"]}}, "bad name"),
    ({"variants": {"a": ["no equals sign"]}}, "no equals sign"),
])
def test_the_schema_refuses_what_the_loader_refuses(data, where):
    jsonschema = pytest.importorskip("jsonschema")
    errors = list(jsonschema.Draft202012Validator(scenario_json_schema()).iter_errors(data))
    assert errors and any(where in (e.message + json.dumps(list(e.path))) for e in errors)


def test_schema_does_not_import_torch():
    code = ("import sys\nfrom fleet.app.run import main\nassert main(['--schema']) == 0\n"
            "assert 'torch' not in sys.modules and 'simpy' not in sys.modules, 'imported by --schema'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
