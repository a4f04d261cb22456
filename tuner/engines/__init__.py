"""Engine configs: a deployment plan turned into ready-to-run vLLM, SGLang and TensorRT-LLM.

``render(engine, inputs)`` takes one replica's ``DeploymentConfig`` plus the plan's per-GPU
memory numbers and returns an ``EngineSection``: a config file, the line that launches it, the
equivalent command line without the file, one launch line per replica, and notes (such as the
pre-quantized checkpoint a plan needs). The three engines are pinned to releases
(``ENGINE_VERSIONS``), and every flag and config key a renderer writes exists in that release's
argument definitions, extracted from its released source by ``extract_flags``.

Choices that hold for all three engines:

* **Memory.** Each engine's fraction is recomputed from the plan's bytes under that engine's own
  rule (``budget.py``): vLLM's counts total memory, SGLang's counts weights + KV, TensorRT-LLM's
  counts what is free after weights and buffers. One number is never copied across engines.
* **Data parallelism.** ``dp`` replicas are rendered as ``dp`` independent servers, each on its
  own GPUs and port (``EngineSection.replicas``), behind the router the plan assumes. The
  engines' own DP modes mean something else: vLLM's ``--data-parallel-size`` couples MoE layers
  across ranks (experts shard over DP x TP and idle ranks run dummy batches), SGLang's mixes with
  attention-DP, and TensorRT-LLM has none. Independent servers are what the simulator modeled.
* **Explicit values.** Defaults drift between releases (vLLM's memory fraction went from 0.90 to
  0.92, ``max_num_seqs`` from 256 to a GPU-dependent 1024), so every value the plan decided is
  written out, booleans included.
* **Shell safety.** Every value in every line is ``shlex``-quoted: a model path with spaces or
  quotes round-trips through ``shlex.split``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal, get_args

from simulator.errors import ConfigError

if TYPE_CHECKING:
    from simulator.data.specs import Admission
    from tuner.engines.inputs import EngineInputs, EngineSection

__all__ = [
    "EngineName",
    "ENGINES",
    "ENGINE_VERSIONS",
    "ENGINE_IMAGES",
    "ENGINE_ADMISSION",
    "EngineInputs",
    "EngineSection",
    "render",
    "memory_fraction",
    "kv_cache_bytes_given",
    "total_bytes_used",
]

# The engine list: each engine's name, its pinned release (its flags are in
# flags/<engine>-<version>.json) and its renderer, the module tuner/engines/<engine>.py.
# Command-line choices, the plan's schema, its ``engines`` section and the tests all read these.
EngineName = Literal["vllm", "sglang", "trtllm"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
ENGINE_VERSIONS: dict[EngineName, str] = {"vllm": "0.33.0", "sglang": "0.5.23", "trtllm": "1.x"}
# The release's container image. vLLM and SGLang publish one tag per release (SGLang's are
# CUDA 13 builds since 0.5.20); TensorRT-LLM's flags were read from 1.x main-branch revisions
# that no release tag names (flags/README.md), so its image is the release repository, to be
# pinned to the 1.x tag deployed.
ENGINE_IMAGES: dict[EngineName, str] = {
    "vllm": "vllm/vllm-openai:v0.33.0",
    "sglang": "lmsysorg/sglang:v0.5.23-cu130",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release",
}
# Whose admission and preemption rules the simulator follows for a plan written for the engine
# (simulator/serving/admission.py): TensorRT-LLM's default capacity policy is GUARANTEED_NO_EVICT.
ENGINE_ADMISSION: dict[EngineName, Admission] = {
    "vllm": "vllm",
    "sglang": "sglang",
    "trtllm": "trtllm-no-evict",
}
assert tuple(ENGINE_VERSIONS) == tuple(ENGINE_IMAGES) == tuple(ENGINE_ADMISSION) == ENGINES, (
    "every engine, every fact"
)

# The rest loads on first use, so a command's argument parser can read ``ENGINES`` for free.
_HOMES = {
    "EngineInputs": "inputs",
    "EngineSection": "inputs",
    "memory_fraction": "budget",
    "kv_cache_bytes_given": "budget",
    "total_bytes_used": "budget",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tuner.engines' has no attribute {name!r}")
    value = getattr(import_module(f"tuner.engines.{home}"), name)
    globals()[name] = value
    return value


def check_engine(engine: str) -> EngineName:
    """``engine`` if it is one of ``ENGINES``, else one clear ``ConfigError``."""
    for name in ENGINES:
        if engine == name:
            return name
    raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")


def render(engine: str, inputs: EngineInputs) -> EngineSection:
    """Render ``inputs`` for ``engine`` (one of ``ENGINES``); ``ConfigError`` if it cannot."""
    renderer = import_module(f"tuner.engines.{check_engine(engine)}")
    section: EngineSection = renderer.render(inputs)
    return section
