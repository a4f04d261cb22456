"""What the three renderers share: the pinned flag definitions, dtype and model-path helpers,
replica launch lines and shell quoting.

Flag definitions come from ``flags/<engine>-<version>.json``, written by ``extract_flags`` from
each engine's released source. ``unknown_flags`` / ``unknown_config_keys`` check a rendered
command or config file against them; the tests run every rendered section through both.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.errors import ConfigError
from tuner.engines import ENGINE_VERSIONS, check_engine
from tuner.handover.checkpoints import Checkpoint
from tuner.safe_text import EnvRef, command_line, shell_word

__all__ = [
    "PROGRAMS",
    "definitions",
    "unknown_flags",
    "unknown_config_keys",
    "bad_values",
    "flag_values",
    "model_dtype",
    "draft_model_path",
    "shell_line",
    "dump_yaml",
    "checkpoint_notes",
]

FLAGS_DIR = Path(__file__).with_name("flags")
# How each engine's server is started; the flags follow.
PROGRAMS = {
    "vllm": ["vllm", "serve"],
    "sglang": ["python", "-m", "sglang.launch_server"],
    "trtllm": ["trtllm-serve"],
}


@functools.cache
def definitions(engine: str) -> dict[str, Any]:
    """The extracted argument definitions of the pinned release of ``engine``."""
    name = check_engine(engine)
    path = FLAGS_DIR / f"{name}-{ENGINE_VERSIONS[name]}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def unknown_flags(engine: str, argv: Iterable[str]) -> list[str]:
    """Tokens of a command line that look like flags but the pinned engine does not define.

    Everything up to the server program itself (``vllm serve``, ``python -m
    sglang.launch_server``, ``trtllm-serve``; an MPI launcher before it) is skipped.
    """
    known = set(definitions(engine)["flags"])
    tokens = list(argv)
    program = PROGRAMS[engine]
    for start in range(len(tokens)):
        if tokens[start : start + len(program)] == program:
            tokens = tokens[start + len(program) :]
            break
    return [a for a in tokens if a.startswith("-") and not _is_number(a) and a not in known]


def unknown_config_keys(engine: str, config: Mapping[str, Any]) -> list[str]:
    """Keys (``a`` or ``a.b`` for nested mappings) of a config file the engine does not define."""
    spec = definitions(engine)
    top, nested = set(spec["config_keys"]), spec["nested_keys"]
    # A switch that is off may be written as its --no- twin (vLLM's file loader needs it).
    top |= {flag[2:] for flag in spec["flags"] if flag.startswith("--no-")}
    bad = []
    for key, value in config.items():
        if key not in top:
            bad.append(key)
        elif isinstance(value, Mapping):
            bad += [f"{key}.{sub}" for sub in value if sub not in nested.get(key, ())]
    return bad


def bad_values(engine: str, *, flags: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """``flag=value`` pairs whose value is outside the choices the engine's source declares."""
    spec = definitions(engine)
    out = []
    for flag, value in flags.items():
        allowed = spec["choices"].get(flag)
        if allowed and not isinstance(value, bool) and str(value) not in allowed:
            out.append(f"{flag}={value}")
    for key, value in config.items():
        if isinstance(value, Mapping):
            for sub, sub_value in value.items():
                allowed = spec["nested_choices"].get(f"{key}.{sub}")
                if allowed and str(sub_value) not in allowed:
                    out.append(f"{key}.{sub}={sub_value}")
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def model_dtype(config: DeploymentConfig) -> str:
    """The dtype of the unquantized parts (embeddings, norms, activations): fp16 or bf16."""
    return "float16" if "fp16" in (config.weight_dtype, config.activation_dtype) else "bfloat16"


def draft_model_path(spec: SpeculativeConfig) -> str:
    """Where the drafter's weights are: an HF id or a directory (a config.json means its folder)."""
    if not spec.draft_model:
        method = "EAGLE" if spec.method == "eagle" else "draft-model"
        raise ConfigError(
            f"{method} speculative decoding needs the drafter's checkpoint: set "
            "speculative.draft_model to its Hugging Face id or local path"
        )
    path = spec.draft_model
    return str(Path(path).parent) if path.endswith("config.json") else path


def shell_line(argv: Iterable[str | EnvRef], env: Mapping[str, str] | None = None) -> str:
    """One shell line; every token quoted so paths with spaces, quotes or newlines survive."""
    prefix = [f"{k}={shell_word(v)}" for k, v in (env or {}).items()]
    return " ".join([*prefix, command_line(argv)])


def dump_yaml(mapping: Mapping[str, Any]) -> str:
    """YAML in the order the renderer built it (easier to read next to the command line)."""
    return yaml.safe_dump(dict(mapping), sort_keys=False, default_flow_style=False)


def checkpoint_notes(checkpoint: Checkpoint) -> list[str]:
    """What the operator must know about the weights an engine loads."""
    notes = []
    if checkpoint.make:
        notes.append(
            f"no public {checkpoint.scheme} checkpoint of this model is known for this engine: "
            f"make {checkpoint.model_id} first ({checkpoint.detail}): {checkpoint.make}"
        )
    elif checkpoint.format == "as given" and checkpoint.prequantized:
        notes.append(f"{checkpoint.model_id} must already hold {checkpoint.scheme} weights")
    if checkpoint.scheme == "fp8" and "static" in checkpoint.detail:
        notes.append(
            "the checkpoint's FP8 activation scales are static; the plan modelled dynamic "
            "per-token scaling, which costs a little more, so its predictions are conservative"
        )
    return notes


def flag_values(argv: Iterable[str]) -> dict[str, str | bool]:
    """``--flag value`` pairs of a command line; a flag followed by another flag maps to True."""
    tokens = list(argv)
    out: dict[str, str | bool] = {}
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else "--"
            out[token] = True if nxt.startswith("--") else nxt
    return out
