"""The plan's JSON Schema and its version check."""

from __future__ import annotations

import json

import pytest
from tuner_helpers import run_cli

from simulator.errors import ConfigError
from tuner.plan import SCHEMA_VERSION, load_plan, plan_json_schema


def test_schema_has_version_and_core_fields(capsys):
    code, out, err = run_cli(capsys, "schema", "plan")
    assert code == 0, err
    schema = json.loads(out)
    assert schema == json.loads(json.dumps(plan_json_schema()))
    props = schema["properties"]
    for field in (
        "schema_version",
        "config",
        "pareto",
        "slos",
        "memory",
        "provenance",
        "engines",
        "quantization",
    ):
        assert field in props, field
    assert props["schema_version"]["const"] == SCHEMA_VERSION


@pytest.mark.parametrize("version", ["1", None, 2])
def test_other_schema_versions_are_refused(tmp_path, version):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"schema_version": version, "model": "x"}))
    with pytest.raises(ConfigError, match="schema_version"):
        load_plan(path)


def test_export_of_another_version_is_one_line(capsys, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"schema_version": "0"}))
    code, out, err = run_cli(capsys, "export", str(path), "--engine", "vllm")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "schema_version '0' is not supported" in err
