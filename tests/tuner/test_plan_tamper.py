"""A plan is a contract: the published schema rejects a tampered one, and so do ``tune export``
and ``tune report``, each in one line with exit status 2."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from tuner_helpers import run_cli

from simulator.errors import ConfigError
from tuner.plan import load_plan, plan_json_schema

EXAMPLE = Path(__file__).resolve().parents[2] / "studies" / "llama-3.1-70b-8xh100-chat"


def _set(path: str, value):
    def change(plan: dict) -> None:
        *parents, last = path.split(".")
        node = plan
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()
TAMPERED = {
    "tp as a string": _set("config.tp", "4"),
    "unknown KV dtype": _set("config.kv_dtype", "int9"),
    "negative replicas": _set("replicas", -3),
    "no engines section": _set("engines", _DELETE),
    "engine section without args": _set("engines.vllm.args", _DELETE),
    "unknown risk level": _set("quantization.risk", "extreme"),
    "memory fraction above one": _set("memory.gpu_memory_utilization", 1.5),
    "port out of range": _set("topology.replicas.0.port", 70000),
    "unknown engine": _set("engine", "tgi"),
    "unknown SLO metric": _set("slos.0.metric", "latency"),
    "undeclared field": _set("owner", "someone"),
    "negative memory budget": _set("memory.budget_bytes", -5),
}


@pytest.fixture(scope="module")
def example() -> dict:
    return json.loads((EXAMPLE / "plan.json").read_text())


def test_the_example_plan_validates(example):
    assert not list(Draft202012Validator(plan_json_schema()).iter_errors(example))
    load_plan(EXAMPLE / "plan.json")


@pytest.mark.parametrize("name", TAMPERED)
def test_a_tampered_plan_is_refused_by_the_schema_and_the_reader(example, tmp_path, name):
    plan = copy.deepcopy(example)
    TAMPERED[name](plan)
    assert list(Draft202012Validator(plan_json_schema()).iter_errors(plan)), name
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(ConfigError) as info:
        load_plan(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", TAMPERED)
def test_export_and_report_refuse_a_tampered_plan_in_one_line(example, tmp_path, capsys, name):
    directory = tmp_path / "study"
    directory.mkdir()
    shutil.copy(EXAMPLE / "study.journal", directory / "study.journal")
    plan = copy.deepcopy(example)
    TAMPERED[name](plan)
    (directory / "plan.json").write_text(json.dumps(plan))
    for argv in (
        ("export", str(directory / "plan.json"), "--engine", "vllm"),
        ("export", str(directory / "plan.json"), "--engine", "vllm", "--format", "k8s"),
        ("report", str(directory)),
    ):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out == "", (name, argv, err)
        assert err.count("\n") == 1 and "invalid plan" in err, (name, argv, err)


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [("model", "llama-9b", "is not the searched"), ("config.tp", 3, "config disagrees")],
)
def test_a_plan_that_contradicts_itself_is_refused_by_the_reader(
    example, tmp_path, capsys, path, value, needle
):
    """What one field cannot say alone: a plan naming another model than the one it searched
    (it used to get a report), or a TP of 3 that its replicas do not add up to (it used to
    render a TP-3 config)."""
    plan = copy.deepcopy(example)
    _set(path, value)(plan)
    target = tmp_path / "plan.json"
    target.write_text(json.dumps(plan))
    with pytest.raises(ConfigError, match=needle):
        load_plan(target)


def test_the_report_pareto_table_reads_in_units_and_lists_each_deployment_once(example, tmp_path):
    """The Pareto table listed raw objective names in seconds, and one deployment once per
    trial that reached it (six identical rows)."""
    from tuner.report_tables import pareto_rows

    plan = copy.deepcopy(example)
    plan["pareto"] = plan["pareto"] + [dict(plan["pareto"][0], trial=999)]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    head, rows = pareto_rows(load_plan(path))
    assert "TPOT p99 (ms)" in head and not any(h.endswith("_s") for h in head)
    labels = [row[1] for row in rows]
    assert len(labels) == len(set(labels)) == len({c["label"] for c in example["pareto"]})
