"""What a plan hands over: where replicas run, which checkpoint each engine loads, Kubernetes
manifests the API accepts, and scripts that run nothing but the engine whatever the names."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from tuner_helpers import run_cli

from simulator.data.hf_config import to_hf_config
from simulator.data.models import get_model
from simulator.errors import ConfigError
from tuner.handover.checkpoints import resolve, table
from tuner.handover.k8s import documents, resource_name
from tuner.handover.topology import lay_out
from tuner.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "studies" / "llama-3.1-70b-8xh100-chat"


# ---------------------------------------------------------------- topology
def test_small_replicas_pack_whole_onto_nodes():
    layout = lay_out(replicas=4, gpus_per_replica=4, gpus_per_node=8)
    assert layout.nodes == 2
    slices = [(r.slices[0].node, r.slices[0].gpus) for r in layout.replicas]
    assert slices == [(0, (0, 1, 2, 3)), (0, (4, 5, 6, 7)), (1, (0, 1, 2, 3)), (1, (4, 5, 6, 7))]
    assert [r.port for r in layout.replicas] == [8000, 8001, 8002, 8003]


def test_a_replica_larger_than_a_node_spans_whole_nodes_alone():
    layout = lay_out(replicas=2, gpus_per_replica=16, gpus_per_node=8)
    assert layout.nodes == 4 and layout.nodes_per_replica == 2
    first, second = layout.replicas
    assert first.nodes == (0, 1) and second.nodes == (2, 3)
    assert [s.ranks for s in first.slices] == [tuple(range(8)), tuple(range(8, 16))]
    assert all(s.gpus == tuple(range(8)) for s in first.slices)
    with pytest.raises(ConfigError, match="evenly"):
        lay_out(replicas=1, gpus_per_replica=9, gpus_per_node=8)


# ---------------------------------------------------------------- checkpoints
def test_quantized_plans_load_quantized_checkpoints_each_engine_reads():
    for preset, entry in table().items():
        for known in entry.get("quantized") or []:
            assert known["source"] == f"https://huggingface.co/{known['id']}", preset
            for engine in known["engines"]:
                found = resolve(preset=preset, weights=known["scheme"], engine=engine)
                assert found.prequantized and found.make is None
                assert engine in next(
                    q["engines"] for q in entry["quantized"] if q["id"] == found.model_id
                )
    fp8 = resolve(preset="llama-3.1-405b", weights="fp8", engine="trtllm")
    assert fp8.model_id == "nvidia/Llama-3.1-405B-Instruct-FP8" and fp8.format == "modelopt"


def test_bf16_plans_load_the_instruct_model_and_overrides_load_as_given():
    assert resolve(preset="llama-3.1-70b", weights="bf16", engine="vllm").model_id == (
        "meta-llama/Llama-3.1-70B-Instruct"
    )
    given = resolve(preset="llama-3.1-8b", weights="fp8", engine="vllm", model_id="/ckpt/x")
    assert given.model_id == "/ckpt/x" and "must already hold fp8" in given.detail


def test_missing_checkpoints_come_with_the_command_that_makes_them():
    made = resolve(preset="llama-3.1-70b", weights="int4", engine="vllm")
    assert made.make and "llmcompressor" in made.make and "W4A16" in made.make
    assert made.model_id in made.make
    made = resolve(preset="llama-3.1-70b", weights="fp8", engine="trtllm")
    assert made.make is None  # Model Optimizer's FP8 checkpoint is published
    with pytest.raises(ConfigError, match="INT8"):
        resolve(preset="llama-3.1-8b", weights="int8", engine="trtllm")


def test_drafters_match_the_target_model_exactly():
    from tuner.search.choices import draft_model, eagle_head

    assert eagle_head(get_model("llama-3.1-8b")) == "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"
    assert eagle_head(get_model("llama-3.1-70b")) is None  # the 70B heads are Llama 3.3's
    assert eagle_head(get_model("llama-3.3-70b")) == "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"
    assert draft_model(get_model("llama-3.1-8b")) == "meta-llama/Llama-3.2-1B-Instruct"
    assert draft_model(get_model("llama-4-scout-17b-16e")) is None


# ---------------------------------------------------------------- Kubernetes
def k8s_schema(kind: str) -> tuple[dict, object]:
    """A strict schema of Kubernetes 1.31 (from kubernetes-validate) and its registry."""
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    folder = "kubernetes-json-schema/v1.31.0-local-strict"
    schema = schema_contents(f"{folder}/{kind}.json", "1.31.0")
    definitions = schema_contents(f"{folder}/_definitions.json", "1.31.0")
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return schema, registry


def validate_k8s(document: dict, kind: str) -> None:
    from jsonschema import Draft202012Validator

    schema, registry = k8s_schema(kind)
    Draft202012Validator(schema, registry=registry).validate(document)


# The LeaderWorkerSet API (kubernetes-sigs/lws, api/leaderworkerset/v1/leaderworkerset_types.go):
# the fields rooftune writes, strictly; its pod templates are checked against Kubernetes' own.
LWS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "leaderworkerset.x-k8s.io/v1"},
        "kind": {"const": "LeaderWorkerSet"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["leaderWorkerTemplate"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 0},
                "startupPolicy": {"enum": ["LeaderCreated", "LeaderReady"]},
                "leaderWorkerTemplate": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["workerTemplate"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "restartPolicy": {"enum": ["RecreateGroupOnPodRestart", "None"]},
                        "leaderTemplate": {"type": "object"},
                        "workerTemplate": {"type": "object"},
                    },
                },
            },
        },
    },
}


def check_manifests(docs: list[dict]) -> None:
    from jsonschema import Draft202012Validator

    for doc in docs:
        assert doc["metadata"]["name"] == resource_name(doc["metadata"]["name"])
        if doc["kind"] == "Deployment":
            validate_k8s(doc, "deployment-apps-v1")
        elif doc["kind"] == "Service":
            validate_k8s(doc, "service-v1")
        else:
            Draft202012Validator(LWS_SCHEMA).validate(doc)
            template = doc["spec"]["leaderWorkerTemplate"]
            for part in ("leaderTemplate", "workerTemplate"):
                validate_k8s(template[part], "podtemplatespec-v1")


def test_single_node_replicas_become_deployments_the_api_accepts():
    plan = load_plan(EXAMPLE / "plan.json")
    for engine in ("vllm", "sglang", "trtllm"):
        docs = documents(plan, engine)
        check_manifests(docs)
        kinds = [d["kind"] for d in docs]
        assert kinds == ["Deployment", "Service"] * plan.replicas
        container = docs[0]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(plan.gpus_per_replica)
        assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_a_bad_manifest_is_rejected_by_the_schemas():
    from jsonschema import ValidationError

    plan = load_plan(EXAMPLE / "plan.json")
    doc = documents(plan, "vllm")[0]
    doc["spec"]["replicas"] = "one"
    with pytest.raises(ValidationError):
        validate_k8s(doc, "deployment-apps-v1")


@pytest.fixture(scope="module")
def spanning_plan(tmp_path_factory):
    """A plan whose one replica spans two nodes (70B bf16, TP 8 x PP 2, on 16 H100s)."""
    out = tmp_path_factory.mktemp("span") / "study"
    from tuner.cli import main

    code = main(["plan", "--model", "llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "16",
                 "--workload", "chat", "--rate", "1", "--requests", "150", "--allow-quant",
                 "bf16", "--tp", "8", "--pp", "2", "--no-speculative", "--slo", "ttft_p99=3s",
                 "--slo", "tpot_p99=100ms", "--no-report", "--quiet", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_a_replica_spanning_nodes_becomes_a_leader_worker_set(spanning_plan, capsys):
    plan = load_plan(spanning_plan / "plan.json")
    assert plan.topology.nodes == 2 and plan.topology.nodes_per_replica == 2
    for engine in ("vllm", "sglang"):
        docs = documents(plan, engine)
        check_manifests(docs)
        lws = docs[0]
        template = lws["spec"]["leaderWorkerTemplate"]
        assert template["size"] == 2
        leader = template["leaderTemplate"]["spec"]["containers"][0]["args"]
        worker = template["workerTemplate"]["spec"]["containers"][0]["args"]
        assert leader[leader.index("--node-rank") + 1] == "0"
        assert worker[worker.index("--node-rank") + 1] == "$(LWS_WORKER_INDEX)"
        assert any("$(LWS_LEADER_ADDRESS)" in word for word in leader)
    code, out, err = run_cli(capsys, "export", str(spanning_plan / "plan.json"),
                             "--engine", "trtllm", "--format", "k8s")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "MPI" in err


def test_spanning_plan_writes_a_script_per_node(spanning_plan):
    names = sorted(p.name for p in spanning_plan.glob("*.sh"))
    assert names == [f"{e}-node{n}.sh" for e in ("sglang", "trtllm", "vllm") for n in (0, 1)]


# ---------------------------------------------------------------- no injection
AWKWARD = "x $(touch pwned) `touch pwned2` 'q' \"dq\"\nnext line"
STUB = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


@pytest.mark.slow
def test_awkward_names_reach_the_engine_verbatim_and_run_nothing_else(tmp_path, capsys):
    model_dir = tmp_path / AWKWARD
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(to_hf_config(get_model("llama-3.2-1b"))))
    out = tmp_path / "study"
    code, _, err = run_cli(
        capsys, "plan", "--model", str(model_dir / "config.json"), "--hardware", "h100-sxm",
        "--gpus", "1", "--workload", "chat", "--requests", "100", "--small-space",
        "--no-speculative", "--study", "s\ntouch pwned\n#$(touch pwned3)", "--no-report",
        "--quiet", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    plan = load_plan(out / "plan.json")
    assert plan.model_id == str(model_dir)  # the directory, not its config.json
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name in ("vllm", "python", "trtllm-serve", "mpirun"):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(stat.S_IRWXU)
    log = tmp_path / "calls.jsonl"
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp_path)}
    for script in sorted(out.glob("*.sh")):
        done = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True)
        assert done.returncode == 0, (script.name, done.stderr)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == ["python", "trtllm-serve", "vllm"]
    for call in calls:
        assert str(model_dir) in call, call
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    # The copy-paste hint is quoted too: bash reads back the very words, running nothing.
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {plan.provenance.command}"],
                           cwd=tmp_path, capture_output=True, text=True).stdout.split("\0")  # fmt: skip
    assert words[0] == "tune" and words[words.index("--model") + 1] == str(
        model_dir / "config.json"
    )
    assert not list(tmp_path.rglob("pwned*"))


def test_markdown_shows_input_as_text():
    from tuner.safe_text import markdown_code, markdown_text

    title = markdown_text("<img src=x onerror=alert(1)> *bold* [link](u) `code`")
    assert "<" not in title and "&lt;img" in title
    assert "\\*bold\\*" in title and "\\[link\\]" in title and "\\`code\\`" in title
    block = markdown_code("a ```\n``` closes? no")
    fence = block.split("\n", 1)[0]
    assert len(fence) == 4 and block.endswith("\n" + fence)


# ---------------------------------------------------------------- the committed studies
STUDIES = sorted(p.parent for p in (ROOT / "studies" / "handover").glob("*/plan.json"))


def test_the_handover_studies_are_committed():
    names = {s.name for s in STUDIES}
    assert {"70b-bf16-tp8pp2-2nodes", "405b-fp8-16xh100", "scout-ep4", "8b-int8-int4",
            "70b-draft-model", "70b-4-replicas-2nodes"} <= names  # fmt: skip


@pytest.mark.parametrize("study", [*STUDIES, EXAMPLE], ids=lambda p: p.name)
def test_no_launch_loads_more_weight_bytes_per_gpu_than_the_plan_budgets(study):
    """Each engine loads weights of the planned precision (never bf16 for a quantized plan,
    never quantized at load time), and its memory knob holds the plan's weights, drafter and KV
    cache within the GPU's memory as the driver reports it."""
    from tuner.engines import EngineInputs, kv_cache_bytes_given, total_bytes_used
    from tuner.engines.inputs import EngineSection

    plan = load_plan(study / "plan.json")
    m = plan.memory
    for engine, section in plan.engines.items():
        if not isinstance(section, EngineSection):
            continue
        assert section.checkpoint.scheme == plan.config.weight_dtype, (study.name, engine)
        assert "--quantization" not in section.args, (study.name, engine)
        inputs = EngineInputs(
            config=plan.config, model_id=section.checkpoint.model_id,
            hbm_bytes=m.device_memory_bytes, weights_bytes=m.weights_bytes + m.drafter_weights_bytes,
            activation_bytes=m.activation_bytes, reserved_bytes=m.reserved_bytes,
            kv_cache_bytes=m.kv_cache_bytes,
        )  # fmt: skip
        fraction = section.memory_fraction
        assert m.engine_fractions[engine] == fraction
        assert (
            kv_cache_bytes_given(engine, inputs, fraction)
            >= m.kv_tokens_needed * m.kv_bytes_per_token
        )
        assert total_bytes_used(engine, inputs, fraction) <= m.device_memory_bytes
