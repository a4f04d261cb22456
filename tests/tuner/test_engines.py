"""Engine configs: every flag and key exists in the pinned engine release, values are quoted
safely, plan knobs land on the engines' names, and the config file starts the same server as
the command line (memory rules: ``test_engine_memory.py``; the flag definitions themselves:
``test_engine_definitions.py``)."""

from __future__ import annotations

import itertools
import json
import shlex

import pytest
import yaml

from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.errors import ConfigError
from tuner.engines import (
    ENGINE_VERSIONS,
    ENGINES,
    EngineInputs,
    EngineSection,
    common,
    render,
)

GIB = 2**30
AWKWARD_MODEL = '/models/My Llama\'s "v2" $HOME;echo pwned'
DRAFT = "meta-llama/Llama-3.2-1B-Instruct"
AWKWARD_DRAFT = '/drafts/tiny\'s "draft" model'

# fmt: off
EVERYTHING = DeploymentConfig(
    tp=4, pp=2, dp=2, ep=4, weight_dtype="fp8", activation_dtype="fp8", kv_dtype="fp8",
    cuda_graphs=False, enable_chunked_prefill=False, max_num_batched_tokens=16384,
    speculative=SpeculativeConfig(method="draft", draft_model=AWKWARD_DRAFT + "/config.json"),
)
# fmt: on
# name -> config; a grid over parallelism, quantization, KV dtype, batching and speculation.
CONFIGS: dict[str, DeploymentConfig] = {
    "dense-8b": DeploymentConfig(),
    "dense-70b-tp4-pp2": DeploymentConfig(tp=4, pp=2, max_num_seqs=128),
    "dense-tp8-dp2": DeploymentConfig(tp=8, dp=2),
    "moe-ep-eq-tp": DeploymentConfig(tp=4, ep=4),
    "moe-ep-eq-tp-dp2": DeploymentConfig(tp=2, ep=2, dp=2),
    "moe-ep-lt-tp": DeploymentConfig(tp=4, ep=2),
    "cp2": DeploymentConfig(tp=2, cp=2),
    "moe-ep-cp2": DeploymentConfig(tp=2, ep=2, cp=2),
    "fp16": DeploymentConfig(weight_dtype="fp16", activation_dtype="fp16"),
    "fp8-w8a8-dynamic": DeploymentConfig(weight_dtype="fp8", activation_dtype="fp8"),
    "fp8-w8a8-static": DeploymentConfig(
        weight_dtype="fp8", activation_dtype="fp8", fp8_scaling="static"
    ),
    "fp8-weight-only": DeploymentConfig(weight_dtype="fp8", activation_dtype="bf16"),
    "int8-w8a8": DeploymentConfig(weight_dtype="int8", activation_dtype="int8"),
    "int8-weight-only": DeploymentConfig(weight_dtype="int8", activation_dtype="bf16"),
    "int4-weight-only": DeploymentConfig(weight_dtype="int4", activation_dtype="bf16"),
    "int4-fp16": DeploymentConfig(weight_dtype="int4", activation_dtype="fp16"),
    "kv-fp8": DeploymentConfig(kv_dtype="fp8"),
    "chunked-off": DeploymentConfig(enable_chunked_prefill=False, max_num_batched_tokens=8192),
    "graphs-off": DeploymentConfig(cuda_graphs=False),
    "static-batching": DeploymentConfig(scheduling="static", max_num_batched_tokens=8),
    "spec-draft": DeploymentConfig(
        speculative=SpeculativeConfig(method="draft", draft_model=DRAFT, num_speculative_tokens=4)
    ),
    "spec-eagle": DeploymentConfig(
        tp=2, speculative=SpeculativeConfig(method="eagle", draft_model="org/eagle3 head")
    ),
    "spec-ngram": DeploymentConfig(speculative=SpeculativeConfig(method="ngram")),
    "everything": EVERYTHING,
    "eagle-without-head": DeploymentConfig(speculative=SpeculativeConfig(method="eagle")),
}
# What an engine cannot express, and the words its one-line refusal must contain.
REFUSED = {
    ("vllm", "moe-ep-lt-tp"): ("ep=2", "tp=4"),
    ("vllm", "moe-ep-cp2"): ("ep=2", "cp=2"),
    ("sglang", "cp2"): ("cp=2",),
    ("sglang", "moe-ep-cp2"): ("cp=2",),
}
REFUSED |= {(e, "eagle-without-head"): ("speculative.draft_model",) for e in ENGINES}


def plan_memory(hbm, w, a, r, kv) -> dict[str, float]:
    keys = ("hbm_bytes", "weights_bytes", "activation_bytes", "reserved_bytes", "kv_cache_bytes")
    return dict(zip(keys, (hbm, w, a, r, kv), strict=True))


PLAN_MEMORY = plan_memory(80 * GIB, 16 * GIB, 3 * GIB, 2 * GIB, 40 * GIB)


def inputs_for(config: DeploymentConfig, **overrides) -> EngineInputs:
    values = dict(PLAN_MEMORY, model_id=AWKWARD_MODEL, served_model_name="llama")
    return EngineInputs(config=config, **{**values, **overrides})


def config_mapping(section: EngineSection) -> dict:
    (text,) = section.config_files.values()
    return yaml.safe_load(text)


RENDERABLE = [(e, n) for e, n in itertools.product(ENGINES, CONFIGS) if (e, n) not in REFUSED]


@pytest.fixture(scope="module")
def sections() -> dict[tuple[str, str], EngineSection]:
    return {(e, n): render(e, inputs_for(CONFIGS[n])) for e, n in RENDERABLE}


# ---------------------------------------------------------------- flags exist in the release
@pytest.mark.parametrize("engine,name", RENDERABLE)
def test_every_flag_and_key_exists_in_pinned_release(sections, engine, name):
    section = sections[engine, name]
    version = ENGINE_VERSIONS[engine]
    lines = [section.command, section.launch, *(c for n in section.nodes for c in n.commands)]
    for line in lines:
        argv = [t for t in shlex.split(line) if "=" not in t or t.startswith("-")]
        bad = common.unknown_flags(engine, argv)
        assert not bad, f"{engine} {version} defines no flag {bad} (config {name}): {line}"
    for filename, text in section.config_files.items():
        bad = common.unknown_config_keys(engine, yaml.safe_load(text))
        assert not bad, f"{engine} {version} defines no key {bad} in {filename} ({name})"
    flags, config = common.flag_values(section.args), config_mapping(section)
    wrong = common.bad_values(engine, flags=flags, config=config)
    assert not wrong, f"{engine} {version} rejects the values {wrong} ({name})"
    if engine == "sglang":  # SGLang rejects the bare "fp8" that vLLM and TRT-LLM accept
        want = "fp8_e4m3" if CONFIGS[name].kv_dtype == "fp8" else "auto"
        assert flags["--kv-cache-dtype"] == want, name


@pytest.mark.parametrize("engine,name", sorted(REFUSED))
def test_inexpressible_plans_are_refused_in_one_line(engine, name):
    with pytest.raises(ConfigError) as info:
        render(engine, inputs_for(CONFIGS[name]))
    message = str(info.value)
    assert "\n" not in message
    for word in REFUSED[engine, name]:
        assert word in message, message


# ---------------------------------------------------------------- shell safety
@pytest.mark.parametrize("engine", ENGINES)
def test_shell_lines_round_trip_awkward_paths(sections, engine):
    section = sections[engine, "everything"]
    assert shlex.split(section.command) == section.args
    assert AWKWARD_MODEL in shlex.split(section.launch)
    # tp=4 x pp=2 per replica, two replicas: one node each, its GPUs 0-7, ports 8000 and 8001.
    assert [node.replicas for node in section.nodes] == [[0], [1]]
    for node in section.nodes:
        (line,) = node.commands
        env, *argv = shlex.split(line)
        assert env == "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7" and AWKWARD_MODEL in argv
        assert argv[argv.index("--port") + 1] == str(8000 + node.replicas[0])
        assert argv[: len(common.PROGRAMS[engine])] == common.PROGRAMS[engine]
    if engine == "vllm":  # the speculative mapping survives JSON quoting on the command line
        spec = json.loads(common.flag_values(section.args)["--speculative-config"])
        assert spec == config_mapping(section)["speculative-config"]


# ---------------------------------------------------------------- engine semantics
QUANTIZED = ["fp8-w8a8-dynamic", "fp8-w8a8-static", "int8-w8a8", "int4-weight-only"]


@pytest.mark.parametrize("name", QUANTIZED)
def test_quantization_comes_from_the_checkpoint_never_a_flag(sections, name):
    """No engine is asked to quantize at load time (vLLM 0.33.0 and SGLang 0.5.23 would load
    the bf16 weights first); a checkpoint given as is must already hold the scheme."""
    scheme = CONFIGS[name].weight_dtype
    for engine in ENGINES:
        section = sections[engine, name]
        assert "--quantization" not in common.flag_values(section.args), engine
        assert "quantization" not in config_mapping(section), engine
        assert f"must already hold {scheme} weights" in " ".join(section.notes), engine


def test_a_checkpoint_to_make_is_named_with_its_command():
    from tuner.handover.checkpoints import resolve

    made = resolve(preset="llama-3.1-70b", weights="int4", engine="trtllm")
    inputs = inputs_for(CONFIGS["int4-weight-only"], checkpoints={"trtllm": made})
    section = render("trtllm", inputs)
    assert section.checkpoint.make and "hf_ptq.py" in section.checkpoint.make
    assert section.args[1] == made.model_id and made.model_id in " ".join(section.notes)


# (engine, config, {flag or dotted YAML key: value, None if absent}): knobs on engine names.
# fmt: off
KNOBS = [
    ("vllm", "dense-8b", {"--kv-cache-dtype": "auto", "--no-enable-expert-parallel": True}),
    ("vllm", "dense-8b", {"--enable-chunked-prefill": True, "--no-enforce-eager": True}),
    ("vllm", "kv-fp8", {"--kv-cache-dtype": "fp8"}),
    ("vllm", "moe-ep-eq-tp", {"--enable-expert-parallel": True}),
    ("vllm", "dense-70b-tp4-pp2", {"--max-num-seqs": "128", "--max-num-batched-tokens": "8192"}),
    ("vllm", "dense-70b-tp4-pp2", {"--pipeline-parallel-size": "2", "--max-model-len": "8192"}),
    ("vllm", "chunked-off", {"--no-enable-chunked-prefill": True}),
    ("vllm", "graphs-off", {"--enforce-eager": True}),
    ("vllm", "spec-draft", {"speculative-config.method": "draft_model"}),
    ("vllm", "spec-draft", {"speculative-config.model": DRAFT}),
    ("vllm", "spec-draft", {"speculative-config.num_speculative_tokens": 4}),
    ("vllm", "spec-eagle", {"speculative-config.method": "eagle3"}),
    ("vllm", "spec-ngram", {"speculative-config.method": "ngram", "speculative-config.model": None}),
    ("vllm", "spec-ngram", {"speculative-config.prompt_lookup_max": 4}),
    ("sglang", "moe-ep-lt-tp", {"--ep-size": "2", "--tp-size": "4"}),
    ("sglang", "dense-70b-tp4-pp2", {"--max-running-requests": "128", "--context-length": "8192"}),
    ("sglang", "dense-70b-tp4-pp2", {"--max-prefill-tokens": "8192", "--pp-size": "2"}),
    ("sglang", "dense-70b-tp4-pp2", {"--chunked-prefill-size": "8192"}),
    ("sglang", "chunked-off", {"--chunked-prefill-size": "-1"}),
    ("sglang", "graphs-off", {"--cuda-graph-backend-decode": "disabled"}),
    ("sglang", "graphs-off", {"--cuda-graph-backend-prefill": "disabled"}),
    ("sglang", "spec-draft", {"--speculative-algorithm": "STANDALONE"}),
    ("sglang", "spec-draft", {"--speculative-draft-model-path": DRAFT}),
    ("sglang", "spec-draft", {"--speculative-num-steps": "4", "--speculative-eagle-topk": "1"}),
    ("sglang", "spec-draft", {"--speculative-num-draft-tokens": "5"}),
    ("sglang", "spec-eagle", {"--speculative-algorithm": "EAGLE3"}),
    ("sglang", "spec-ngram", {"--speculative-algorithm": "NGRAM"}),
    ("sglang", "spec-ngram", {"--speculative-num-draft-tokens": "4"}),
    ("trtllm", "dense-8b", {"kv_cache_config.dtype": "auto"}),
    ("trtllm", "dense-8b", {"cuda_graph_config.max_batch_size": 256}),
    ("trtllm", "kv-fp8", {"kv_cache_config.dtype": "fp8"}),
    ("trtllm", "moe-ep-lt-tp", {"moe_expert_parallel_size": 2, "moe_tensor_parallel_size": 2}),
    ("trtllm", "dense-70b-tp4-pp2", {"max_batch_size": 128, "max_num_tokens": 8192}),
    ("trtllm", "dense-70b-tp4-pp2", {"max_seq_len": 8192, "--pp_size": "2"}),
    ("trtllm", "chunked-off", {"enable_chunked_prefill": False, "--enable_chunked_prefill": None}),
    ("trtllm", "graphs-off", {"cuda_graph_config": None}),
    ("trtllm", "spec-draft", {"speculative_config.decoding_type": "Draft_Target"}),
    ("trtllm", "spec-draft", {"speculative_config.max_draft_len": 4}),
    ("trtllm", "spec-draft", {"speculative_config.speculative_model": DRAFT}),
    ("trtllm", "spec-eagle", {"speculative_config.decoding_type": "Eagle3"}),
    ("trtllm", "spec-ngram", {"speculative_config.decoding_type": "NGram"}),
    ("trtllm", "everything", {"speculative_config.speculative_model": AWKWARD_DRAFT}),
]
# fmt: on


@pytest.mark.parametrize("engine,name,expected", KNOBS)
def test_plan_knobs_land_on_engine_names(sections, engine, name, expected):
    section = sections[engine, name]
    flags, config = common.flag_values(section.args), config_mapping(section)
    for key, want in expected.items():
        got = flags.get(key) if key.startswith("-") else config
        for part in [] if key.startswith("-") else key.split("."):
            got = got.get(part) if isinstance(got, dict) else None
        assert got == want, f"{engine} {name}: {key} is {got!r}, expected {want!r}"


# ---------------------------------------------------------------- file form == command form
# The released loaders' rules, as read in their source (tuner/engines/vllm.py, sglang.py):
# vLLM 0.33.0 expands ``vllm serve MODEL --config F`` with the *top-level* parser, which knows
# no --no- twins, so ``key: false`` is dropped; SGLang 0.5.23 passes keys verbatim, omits a
# store_true flag set to false and rejects BooleanOptionalAction flags (those with a --no- twin).
def vllm_file_argv(mapping: dict) -> list[str]:
    argv: list[str] = []
    for key, value in mapping.items():
        if isinstance(value, bool):
            argv += [f"--{key}"] if value else []  # false: silently dropped
        elif isinstance(value, list):
            argv += [f"--{key}", *map(str, value)] if value else []
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def sglang_file_argv(mapping: dict) -> list[str]:
    twins = {f[5:] for f in common.definitions("sglang")["flags"] if f.startswith("--no-")}
    argv: list[str] = []
    for key, value in mapping.items():
        assert key not in twins, f"SGLang rejects {key} (BooleanOptionalAction) in a config file"
        if isinstance(value, bool):
            argv += [f"--{key}"] if value else []
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def settings(argv: list[str]) -> dict[str, object]:
    """Flag -> value of an argv (JSON values parsed, so spacing does not matter)."""
    out: dict[str, object] = {}
    for flag, value in common.flag_values(argv).items():
        try:
            out[flag] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            out[flag] = value
    return out


EXPAND = {"vllm": vllm_file_argv, "sglang": sglang_file_argv}


@pytest.mark.parametrize("engine,name", [(e, n) for e, n in RENDERABLE if e in EXPAND])
def test_the_config_file_starts_the_same_server_as_the_command_line(sections, engine, name):
    section = sections[engine, name]
    with_file = shlex.split(section.launch)
    at = with_file.index("--config")
    expanded = [*with_file[:at], *EXPAND[engine](config_mapping(section)), *with_file[at + 2 :]]
    assert settings(expanded) == settings(section.args), f"{engine} {name}"
    if engine == "vllm":  # a switch that is off survives the loader only as its --no- twin
        assert False not in config_mapping(section).values()


SPANNING = DeploymentConfig(tp=8, pp=2, dp=2)  # two replicas of two nodes each


@pytest.mark.parametrize("engine", ENGINES)
def test_a_replica_larger_than_a_node_gets_one_script_per_node(engine):
    section = render(engine, inputs_for(SPANNING))
    assert [n.node for n in section.nodes] == [0, 1, 2, 3]
    assert [n.replicas for n in section.nodes] == [[0], [0], [1], [1]]
    lines = [n.commands for n in section.nodes]
    if engine == "trtllm":  # one MPI launch from each replica's first node
        assert not lines[1] and not lines[3]
        for node, hosts in ((0, "REPLICA0_HOSTS"), (2, "REPLICA1_HOSTS")):
            argv = shlex.split(lines[node][0])
            assert argv[1:3] == ["mpirun", "-H"] and argv[argv.index("-np") + 1] == "16"
            assert hosts in section.nodes[node].env
        return
    for node, (command,) in enumerate(lines):
        argv = shlex.split(command)
        leader = "NODE0_ADDR" if node < 2 else "NODE2_ADDR"
        assert argv[argv.index("--nnodes") + 1] == "2"
        assert argv[argv.index("--node-rank") + 1] == str(node % 2)
        assert leader in command and section.nodes[node].env == [leader]
        if engine == "vllm":
            assert ("--headless" in argv) == (node % 2 == 1)
            assert argv[argv.index("--master-port") + 1] == "29501"
