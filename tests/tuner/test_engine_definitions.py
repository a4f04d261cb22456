"""The engines' flag and key definitions committed beside the renderers: each records the
release and source it was read from, re-extracting from a wheel gives the same, and the
extractor reads TensorRT-LLM's pydantic fields and click options."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tuner.engines import ENGINE_VERSIONS, ENGINES, common
from tuner.engines.extract_flags import extract


@pytest.mark.parametrize("engine", ENGINES)
def test_committed_definitions_record_their_source(engine):
    spec = common.definitions(engine)
    assert spec["engine"] == engine and spec["version"] == ENGINE_VERSIONS[engine]
    assert spec["files_read"] and spec["flags"] == sorted(spec["flags"])
    ids = spec["source"]["commits"].values() if engine == "trtllm" else [spec["source"]["sha256"]]
    assert all(len(i) in (40, 64) for i in ids)


WHEELS = os.environ.get("ROOFTUNE_ENGINE_WHEELS")


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_reextracting_from_the_wheel_matches_committed(engine):
    wheel = f"{engine}-{ENGINE_VERSIONS[engine]}-*.whl"
    found = sorted(Path(WHEELS).glob(wheel)) if WHEELS else []
    if not found:
        pytest.skip(f"no {wheel} in ROOFTUNE_ENGINE_WHEELS={WHEELS!r} (a folder of wheels)")
    fresh = extract(engine=engine, wheel=found[0])
    committed = common.definitions(engine)
    for key in ("flags", "config_keys", "choices", "nested_keys", "nested_choices", "source"):
        assert fresh[key] == committed[key], f"{engine}: {key} differs from the committed JSON"


# A small source tree shaped like TensorRT-LLM's, for the extractor's TRT-LLM path.
TRT_LLM_ARGS = """
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
        SpeculativeConfig: TypeAlias = Annotated[
            Union[NGramDecodingConfig, Eagle3DecodingConfig], Field(discriminator="decoding_type")]
        class BaseLlmArgs(StrictBaseModel):
            tensor_parallel_size: int = 1
            kv_cache_config: KvCacheConfig = Field(default_factory=KvCacheConfig)
            speculative_config: Optional[SpeculativeConfig] = None
        class TorchLlmArgs(BaseLlmArgs):
            cuda_graph_config: Optional[dict] = None
            kind: ClassVar[str] = "torch"
    """
TRT_SERVE = """
        @click.command("serve")
        @click.option("--tensor_parallel_size", "--tp_size", type=int, default=1)
        @click.option("--backend", type=ChoiceWithAlias(["pytorch", "tensorrt"], {}))
        @click.option("--config", "--extra_llm_api_options", "extra_llm_api_options", type=str)
        @click.option("--trust_remote_code", is_flag=True)
        def serve(model, tensor_parallel_size, backend, extra_llm_api_options, trust_remote_code):
            pass
    """


def test_trtllm_extractor_reads_pydantic_fields_and_click_options(tmp_path):
    sources = {"llmapi/llm_args.py": TRT_LLM_ARGS, "commands/serve.py": TRT_SERVE}
    for name, text in sources.items():
        path = tmp_path / "tensorrt_llm" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
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
