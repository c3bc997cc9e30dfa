"""The scenario file's JSON schema: ``python -m fleet.run --schema``, for editors that complete and check YAML.

It is pydantic's schema of ``fleet.app.schema.Scenario`` (every key with its title, description, default and
bounds) plus the file-level ``variants`` key that ``fleet.app.scenario.load_variants`` reads before
validation. The schema states the keys and their bounds one by one; what only the loader can tell (a
device class name from the catalog, an algorithm's parameters, cross-field checks such as the quorum) is
checked when the scenario is loaded. Torch-free, like ``--help``.
"""

from __future__ import annotations

import json

from fleet.app.scenario import VARIANT_NAME, Scenario

__all__ = ["SCHEMA_DIALECT", "scenario_json_schema", "schema_text"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def scenario_json_schema() -> dict:
    """The JSON schema (draft 2020-12) a scenario YAML file follows, as a JSON-ready dict."""
    schema = Scenario.model_json_schema()
    schema = {"$schema": SCHEMA_DIALECT, **schema}
    schema["properties"] = {**schema["properties"], "variants": {
        "title": "Variants",
        "description": ("Named lists of 'path.to.key=value' overrides, run side by side on the same fleet and "
                        "seed (one output folder each); a name is a folder name."),
        "type": "object",
        "propertyNames": {"pattern": f"^{VARIANT_NAME.pattern}$"},
        "additionalProperties": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}},
        "minProperties": 1,
    }}
    return schema


def schema_text() -> str:
    """``scenario_json_schema`` as strict JSON text (no NaN or infinity), indented, keys in the model's order."""
    return json.dumps(scenario_json_schema(), indent=2, allow_nan=False)
