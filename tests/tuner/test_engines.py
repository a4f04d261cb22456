"""Engine configs: every flag and key exists in the pinned engine release, values are quoted
safely, and no plan becomes memory-infeasible under an engine's own budget rule."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import textwrap
from pathlib import Path

import pytest
import yaml

from simulator.errors import ConfigError
from simulator.specs import DeploymentConfig, SpeculativeConfig
from tuner.engines import (
    ENGINE_VERSIONS,
    ENGINES,
    EngineInputs,
    EngineSection,
    memory_fraction,
    render,
)
from tuner.engines.common import (
    PROGRAMS,
    bad_values,
    definitions,
    unknown_config_keys,
    unknown_flags,
)
from tuner.engines.extract_flags import extract

GIB = 2**30
AWKWARD_MODEL = '/models/My Llama\'s "v2" $HOME;echo pwned'
DRAFT = "meta-llama/Llama-3.2-1B-Instruct"

# fmt: off
EVERYTHING = DeploymentConfig(
    tp=4, pp=2, dp=2, ep=4, weight_dtype="fp8", activation_dtype="fp8", kv_dtype="fp8",
    cuda_graphs=False, enable_chunked_prefill=False, max_num_batched_tokens=16384,
    speculative=SpeculativeConfig(method="draft", draft_model="/drafts/tiny/config.json"),
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
}
# What an engine cannot express, and the words its one-line refusal must contain.
REFUSED = {
    ("vllm", "moe-ep-lt-tp"): ("ep=2", "tp=4"),
    ("sglang", "cp2"): ("cp=2",),
}


def plan_memory(hbm, w, a, r, kv) -> dict[str, float]:
    """Per-GPU bytes: memory, weights, activations, reserve, KV cache."""
    return dict(
        hbm_bytes=hbm, weights_bytes=w, activation_bytes=a, reserved_bytes=r, kv_cache_bytes=kv
    )


PLAN_MEMORY = plan_memory(80 * GIB, 16 * GIB, 3 * GIB, 2 * GIB, 40 * GIB)


def inputs_for(config: DeploymentConfig, **overrides) -> EngineInputs:
    values = dict(PLAN_MEMORY, model_id=AWKWARD_MODEL, served_model_name="llama")
    return EngineInputs(config=config, **{**values, **overrides})


def flag_values(argv: list[str]) -> dict[str, str | bool]:
    """``--flag value`` pairs of a command line (a bare flag maps to True)."""
    out: dict[str, str | bool] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else "--"
            out[token] = True if nxt.startswith("--") else nxt
    return out


def config_mapping(section: EngineSection) -> dict:
    (text,) = section.config_files.values()
    return yaml.safe_load(text)


def renderable():
    for engine, name in itertools.product(ENGINES, CONFIGS):
        if (engine, name) not in REFUSED:
            yield engine, name


@pytest.fixture(scope="module")
def sections() -> dict[tuple[str, str], EngineSection]:
    return {(e, n): render(e, inputs_for(CONFIGS[n])) for e, n in renderable()}


# ---------------------------------------------------------------- flags exist in the release
@pytest.mark.parametrize("engine,name", list(renderable()))
def test_every_flag_and_key_exists_in_pinned_release(sections, engine, name):
    section = sections[engine, name]
    version = ENGINE_VERSIONS[engine]
    lines = [section.command, section.launch, *section.replicas]
    for line in lines:
        argv = [t for t in shlex.split(line) if "=" not in t or t.startswith("-")]
        bad = unknown_flags(engine, argv)
        assert not bad, f"{engine} {version} defines no flag {bad} (config {name}): {line}"
    for filename, text in section.config_files.items():
        bad = unknown_config_keys(engine, yaml.safe_load(text))
        assert not bad, f"{engine} {version} defines no key {bad} in {filename} ({name})"
    wrong = bad_values(engine, flags=flag_values(section.args), config=config_mapping(section))
    assert not wrong, f"{engine} {version} rejects the values {wrong} ({name})"


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
    for replica, line in enumerate(section.replicas):
        env, *argv = shlex.split(line)
        assert env.startswith("CUDA_VISIBLE_DEVICES=") and AWKWARD_MODEL in argv
        assert argv[-1] == str(8000 + replica)
    assert len(section.replicas) == CONFIGS["everything"].dp
    assert argv[: len(PROGRAMS[engine])] == PROGRAMS[engine]


def test_awkward_draft_path_survives_json_and_yaml(sections):
    section = sections["vllm", "spec-eagle"]
    spec = json.loads(flag_values(section.args)["--speculative-config"])
    assert spec == {"method": "eagle3", "model": "org/eagle3 head", "num_speculative_tokens": 3}
    assert config_mapping(section)["speculative-config"] == spec


# ---------------------------------------------------------------- engine semantics
def test_kv_dtype_spellings(sections):
    for name, config in CONFIGS.items():
        want_fp8 = config.kv_dtype == "fp8"
        if ("sglang", name) in sections:
            sglang = flag_values(sections["sglang", name].args)["--kv-cache-dtype"]
            assert sglang == ("fp8_e4m3" if want_fp8 else "auto"), name  # never bare "fp8"
            assert config_mapping(sections["sglang", name])["kv-cache-dtype"] != "fp8"
        if ("vllm", name) in sections:
            vllm = flag_values(sections["vllm", name].args)["--kv-cache-dtype"]
            assert vllm == ("fp8" if want_fp8 else "auto"), name
        trt = config_mapping(sections["trtllm", name])["kv_cache_config"]["dtype"]
        assert trt == ("fp8" if want_fp8 else "auto"), name


@pytest.mark.parametrize(
    "name,vllm_q,sglang_q,note",
    [
        ("dense-8b", None, None, None),
        ("fp8-w8a8-dynamic", "fp8", "fp8", None),
        ("fp8-w8a8-static", None, None, "pre-quantized FP8"),
        ("fp8-weight-only", "fp8", "fp8", None),
        ("int8-w8a8", None, "w8a8_int8", "INT8 W8A8"),
        ("int8-weight-only", None, None, "INT8 weight-only"),
        ("int4-weight-only", None, None, "INT4 weight-only"),
    ],
)
def test_quantization_flags_and_checkpoint_notes(sections, name, vllm_q, sglang_q, note):
    assert flag_values(sections["vllm", name].args).get("--quantization") == vllm_q
    assert flag_values(sections["sglang", name].args).get("--quantization") == sglang_q
    for engine in ("vllm", "sglang"):
        notes = " ".join(sections[engine, name].notes)
        assert (note in notes) if note else "pre-quantized" not in notes
    trt_notes = " ".join(sections["trtllm", name].notes)
    quantized = CONFIGS[name].weight_dtype not in ("bf16", "fp16")
    assert ("ModelOpt pre-quantized" in trt_notes) == quantized


# (engine, config, flag or dotted YAML key, expected): plan knobs land on each engine's names.
ABSENT = None
KNOBS = [
    ("vllm", "moe-ep-eq-tp", "--enable-expert-parallel", True),
    ("vllm", "dense-8b", "--no-enable-expert-parallel", True),
    ("sglang", "moe-ep-lt-tp", "--ep-size", "2"),
    ("trtllm", "moe-ep-lt-tp", "moe_expert_parallel_size", 2),
    ("trtllm", "moe-ep-lt-tp", "moe_tensor_parallel_size", 2),
    ("vllm", "dense-70b-tp4-pp2", "--max-num-seqs", "128"),
    ("vllm", "dense-70b-tp4-pp2", "--max-num-batched-tokens", "8192"),
    ("vllm", "dense-70b-tp4-pp2", "--pipeline-parallel-size", "2"),
    ("vllm", "dense-70b-tp4-pp2", "--max-model-len", "8192"),
    ("sglang", "dense-70b-tp4-pp2", "--max-running-requests", "128"),
    ("sglang", "dense-70b-tp4-pp2", "--context-length", "8192"),
    ("sglang", "dense-70b-tp4-pp2", "--max-prefill-tokens", "8192"),
    ("sglang", "dense-70b-tp4-pp2", "--chunked-prefill-size", "8192"),
    ("trtllm", "dense-70b-tp4-pp2", "max_batch_size", 128),
    ("trtllm", "dense-70b-tp4-pp2", "max_num_tokens", 8192),
    ("trtllm", "dense-70b-tp4-pp2", "max_seq_len", 8192),
    ("trtllm", "dense-70b-tp4-pp2", "--pp_size", "2"),
    ("vllm", "dense-8b", "--enable-chunked-prefill", True),
    ("vllm", "chunked-off", "--no-enable-chunked-prefill", True),
    ("sglang", "chunked-off", "--chunked-prefill-size", "-1"),
    ("trtllm", "chunked-off", "enable_chunked_prefill", False),
    ("trtllm", "chunked-off", "--enable_chunked_prefill", ABSENT),
    ("vllm", "graphs-off", "--enforce-eager", True),
    ("vllm", "dense-8b", "--no-enforce-eager", True),
    ("sglang", "graphs-off", "--cuda-graph-backend-decode", "disabled"),
    ("sglang", "graphs-off", "--cuda-graph-backend-prefill", "disabled"),
    ("trtllm", "graphs-off", "cuda_graph_config", None),
    ("trtllm", "dense-8b", "cuda_graph_config.max_batch_size", 256),
    ("vllm", "spec-draft", "speculative-config.method", "draft_model"),
    ("vllm", "spec-draft", "speculative-config.model", DRAFT),
    ("vllm", "spec-draft", "speculative-config.num_speculative_tokens", 4),
    ("vllm", "spec-eagle", "speculative-config.method", "eagle3"),
    ("vllm", "spec-ngram", "speculative-config.method", "ngram"),
    ("vllm", "spec-ngram", "speculative-config.prompt_lookup_max", 4),
    ("vllm", "spec-ngram", "speculative-config.model", ABSENT),
    ("sglang", "spec-draft", "--speculative-algorithm", "STANDALONE"),
    ("sglang", "spec-draft", "--speculative-draft-model-path", DRAFT),
    ("sglang", "spec-draft", "--speculative-num-steps", "4"),  # the triple is all-or-nothing
    ("sglang", "spec-draft", "--speculative-eagle-topk", "1"),
    ("sglang", "spec-draft", "--speculative-num-draft-tokens", "5"),
    ("sglang", "spec-eagle", "--speculative-algorithm", "EAGLE3"),
    ("sglang", "spec-ngram", "--speculative-algorithm", "NGRAM"),
    ("sglang", "spec-ngram", "--speculative-num-draft-tokens", "4"),
    ("trtllm", "spec-draft", "speculative_config.decoding_type", "Draft_Target"),
    ("trtllm", "spec-draft", "speculative_config.max_draft_len", 4),
    ("trtllm", "spec-draft", "speculative_config.speculative_model", DRAFT),
    ("trtllm", "spec-eagle", "speculative_config.decoding_type", "Eagle3"),
    ("trtllm", "spec-ngram", "speculative_config.decoding_type", "NGram"),
    ("trtllm", "everything", "speculative_config.speculative_model", "/drafts/tiny"),
]


@pytest.mark.parametrize("engine,name,key,want", KNOBS)
def test_plan_knobs_land_on_engine_names(sections, engine, name, key, want):
    section = sections[engine, name]
    if key.startswith("-"):
        got = flag_values(section.args).get(key)
    else:
        got = config_mapping(section)
        for part in key.split("."):
            got = got.get(part) if isinstance(got, dict) else None
    assert got == want, f"{engine} {name}: {key} is {got!r}, expected {want!r}"


def test_eagle_without_a_head_is_refused():
    config = DeploymentConfig(speculative=SpeculativeConfig(method="eagle"))
    for engine in ENGINES:
        with pytest.raises(ConfigError, match="draft_model"):
            render(engine, inputs_for(config))


# ---------------------------------------------------------------- memory rules
def granted(engine: str, fraction: float, *, hbm, w, a, r) -> tuple[float, float]:
    """(KV bytes the engine allocates, total bytes it uses), recomputed from its rule."""
    if engine == "vllm":  # share of total memory for everything
        kv = fraction * hbm - (w + a + r)
        return kv, w + a + r + kv
    if engine == "sglang":  # share of total memory for weights + KV pool
        kv = fraction * hbm - w
        return kv, fraction * hbm + a + r
    kv = fraction * (hbm - w - a - r)  # TRT-LLM: share of what is free after weights, buffers
    return kv, w + a + r + kv


def emitted_fraction(engine: str, section: EngineSection) -> float:
    config = config_mapping(section)
    if engine == "vllm":
        return float(config["gpu-memory-utilization"])
    if engine == "sglang":
        return float(config["mem-fraction-static"])
    cli = float(flag_values(section.args)["--kv_cache_free_gpu_memory_fraction"])
    assert cli == config["kv_cache_config"]["free_gpu_memory_fraction"]
    return cli


MEMORY_GRID = list(
    itertools.product(
        (24 * GIB, 80 * GIB, 141 * GIB),  # hbm
        (0.05, 0.3, 0.6),  # weights share
        (0.01, 0.06),  # activation share
        (0.01, 0.04),  # reserve share
        (0.001, 0.1, 0.3, 0.6),  # kv share
    )
)


@pytest.mark.parametrize("engine", ENGINES)
def test_emitted_fraction_gives_the_plan_its_kv_and_fits(engine):
    config = DeploymentConfig()
    checked = refused = 0
    for hbm, *shares in MEMORY_GRID:
        w, a, r, kv = (round(s * hbm) for s in shares)
        inputs = inputs_for(config, **plan_memory(hbm, w, a, r, kv))
        try:
            section = render(engine, inputs)
        except ConfigError:
            refused += 1
            # Refusals are only for plans that do not fit (or leave under 2% headroom).
            assert w + a + r + kv > 0.975 * hbm, (engine, hbm, shares)
            continue
        fraction = emitted_fraction(engine, section)
        assert 0 < fraction <= 0.98
        kv_given, total = granted(engine, fraction, hbm=hbm, w=w, a=a, r=r)
        assert kv_given >= kv, f"{engine}: {fraction} gives {kv_given} < {kv} bytes of KV"
        assert total <= hbm, f"{engine}: {fraction} uses {total} > {hbm} bytes"
        assert kv_given - kv < 0.0011 * hbm, "rounded up by more than one 0.001 step"
        checked += 1
    assert checked > 100 and refused > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_plans_that_do_not_fit_are_refused(engine):
    too_big = inputs_for(DeploymentConfig(), kv_cache_bytes=70 * GIB)  # 16+3+2+70 > 80 GiB
    with pytest.raises(ConfigError):
        memory_fraction(engine, too_big)
    with pytest.raises(ConfigError, match="no memory"):
        memory_fraction(engine, inputs_for(DeploymentConfig(), kv_cache_bytes=0))


def test_sglang_rounding_never_eats_activation_headroom():
    # weights + KV = 0.90004 of memory and activations + reserve leave 5e-5 of it free: the
    # 0.001 grid point (0.901) would overcommit the memory outside the static pools, so the
    # fraction comes from the next finer grid.
    hbm = 80 * GIB
    w, kv, a, r = 0.5 * hbm, 0.40004 * hbm, 0.05 * hbm, 0.04985 * hbm
    inputs = inputs_for(DeploymentConfig(), **plan_memory(hbm, w, a, r, kv))
    fraction = memory_fraction("sglang", inputs)
    granted_kv, total = granted("sglang", fraction, hbm=hbm, w=w, a=a, r=r)
    assert fraction == 0.9001 and granted_kv >= kv and total <= hbm


def test_engine_inputs_validate_and_build_from_a_prediction():
    with pytest.raises(ConfigError, match="weights_bytes"):
        inputs_for(DeploymentConfig(), weights_bytes=-1)
    with pytest.raises(ConfigError, match="model_id"):
        inputs_for(DeploymentConfig(), model_id=" ")
    # The memory block of a Prediction (its capacity is the GPU's usable memory).
    memory = plan_memory(None, 1e9, 1e8, 1e8, 2e9)
    memory["capacity_bytes"] = memory.pop("hbm_bytes") or 8e9
    built = EngineInputs.from_memory(config=DeploymentConfig(), model_id="m", memory=memory)
    assert built.hbm_bytes == 8e9 and built.kv_cache_bytes == 2e9
    del memory["capacity_bytes"]
    with pytest.raises(ConfigError, match="capacity_bytes"):
        EngineInputs.from_memory(config=DeploymentConfig(), model_id="m", memory=memory)
    with pytest.raises(ConfigError, match="unknown engine"):
        render("tgi", built)


# ---------------------------------------------------------------- the extracted definitions
@pytest.mark.parametrize("engine", ENGINES)
def test_committed_definitions_record_their_source(engine):
    spec = definitions(engine)
    assert spec["engine"] == engine and spec["version"] == ENGINE_VERSIONS[engine]
    assert spec["files_read"] and spec["flags"] == sorted(spec["flags"])
    if engine == "trtllm":
        assert all(len(c) == 40 for c in spec["source"]["commits"].values())
    else:
        assert len(spec["source"]["sha256"]) == 64


WHEELS = os.environ.get("ROOFTUNE_ENGINE_WHEELS")


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_reextracting_from_the_wheel_matches_committed(engine):
    if not WHEELS:
        pytest.skip("set ROOFTUNE_ENGINE_WHEELS to a folder with the pinned vLLM/SGLang wheels")
    found = sorted(Path(WHEELS).glob(f"{engine}-{ENGINE_VERSIONS[engine]}-*.whl"))
    if not found:
        pytest.skip(f"no {engine}-{ENGINE_VERSIONS[engine]} wheel in {WHEELS}")
    fresh = extract(engine=engine, wheel=found[0])
    committed = definitions(engine)
    for key in ("flags", "config_keys", "choices", "nested_keys", "nested_choices", "source"):
        assert fresh[key] == committed[key], f"{engine}: {key} differs from the committed JSON"


def test_trtllm_extractor_reads_pydantic_fields_and_click_options(tmp_path):
    """The TRT-LLM path of the extractor, on a small source tree shaped like the real one."""
    llm_args = tmp_path / "tensorrt_llm" / "llmapi" / "llm_args.py"
    serve = tmp_path / "tensorrt_llm" / "commands" / "serve.py"
    for path in (llm_args, serve):
        path.parent.mkdir(parents=True)
    llm_args.write_text(
        textwrap.dedent("""
        class KvCacheConfig(StrictBaseModel):
            free_gpu_memory_fraction: Optional[float] = Field(default=0.9)
            dtype: str = "auto"
        class DecodingBaseConfig(StrictBaseModel):
            max_draft_len: Optional[int] = None
            speculative_model: Optional[str] = Field(
                default=None, validation_alias=AliasChoices("speculative_model", "speculative_model_dir"))
        class NGramDecodingConfig(DecodingBaseConfig):
            decoding_type: Literal["NGram"] = Field(default="NGram")
        class Eagle3DecodingConfig(DecodingBaseConfig):
            decoding_type: Literal["Eagle3"] = Field(default="Eagle3")
            _private: int = 0
        SpeculativeConfig: TypeAlias = Annotated[
            Union[NGramDecodingConfig, Eagle3DecodingConfig], Field(discriminator="decoding_type")]
        class BaseLlmArgs(StrictBaseModel):
            tensor_parallel_size: int = 1
            kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
            speculative_config: Optional[SpeculativeConfig] = None
        class TorchLlmArgs(BaseLlmArgs):
            cuda_graph_config: Optional[dict] = None
            kind: ClassVar[str] = "torch"
    """)
    )
    serve.write_text(
        textwrap.dedent("""
        @click.command("serve")
        @click.argument("model", type=str)
        @click.option("--tensor_parallel_size", "--tp_size", type=int, default=1)
        @click.option("--backend", type=ChoiceWithAlias(["pytorch", "tensorrt"], {}))
        @click.option("--config", "--extra_llm_api_options", "extra_llm_api_options", type=str)
        @click.option("--trust_remote_code", is_flag=True)
        def serve(model, tensor_parallel_size, backend, extra_llm_api_options, trust_remote_code):
            pass
        @click.command("other")
        @click.option("--not_serve")
        def other(not_serve):
            pass
    """)
    )
    data = extract(engine="trtllm", source_dir=tmp_path, version="test", commit="f" * 40)
    flags = "--tensor_parallel_size --tp_size --backend --config --extra_llm_api_options"
    assert data["flags"] == sorted([*flags.split(), "--trust_remote_code"])
    keys = "cuda_graph_config kv_cache_config speculative_config tensor_parallel_size"
    assert data["config_keys"] == keys.split()
    assert data["nested_keys"]["kv_cache_config"] == ["dtype", "free_gpu_memory_fraction"]
    spec = "decoding_type max_draft_len speculative_model speculative_model_dir"
    assert data["nested_keys"]["speculative_config"] == spec.split()
    assert data["nested_choices"]["speculative_config.decoding_type"] == ["Eagle3", "NGram"]
    assert data["choices"]["--backend"] == ["pytorch", "tensorrt"]
    assert data["source"] == {"commit": "f" * 40}
