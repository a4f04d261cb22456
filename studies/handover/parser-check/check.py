"""Every vLLM and SGLang launch line of the hand-over studies, through the released engines' own
parsers: the config-file form, the command-line form and each node's command must parse, and
resolve to the same settings (the node's rank, rendezvous and port aside).

Run with the repository's Python; the engines live in their own environments (see README.md):

    python studies/handover/parser-check/check.py \
        --vllm-python /work/engine-envs/vllm/bin/python \
        --sglang-python /work/engine-envs/sglang/bin/python > studies/handover/parser-check.log

vLLM is parsed exactly as ``vllm serve`` parses (``vllm_parse.py``: the top-level parser, the
``--config`` expansion, ``AsyncEngineArgs.from_cli_args``). SGLang through
``prepare_server_args`` and then its resolution and ``check_server_args`` on an emulated
8 x H100 (``sglang_parse.py``); resolution reads the model's ``config.json``, so each
checkpoint id is replaced by a local directory holding its preset's ``config.json`` (the
architecture; the weights' quantization is then not seen by SGLang's resolution).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from simulator.data.hf_config import to_hf_config  # noqa: E402
from simulator.data.models import get_model  # noqa: E402
from tuner.engines.inputs import EngineSection  # noqa: E402
from tuner.plan import load_plan  # noqa: E402

STUDIES = sorted(p.parent for p in (ROOT / "studies" / "handover").glob("*/plan.json"))
STUDIES.append(ROOT / "studies" / "llama-3.1-70b-8xh100-chat")
# What differs between one node's command and the config-file form, by design.
PER_NODE = {
    "vllm": {"nnodes", "node_rank", "master_addr", "master_port"},
    "sglang": {"nnodes", "node_rank", "dist_init_addr", "port"},
}
# Not settings: SGLang draws a random seed in each process where none is given.
DRAWN = {"random_seed"}
ADDRESSES = {f"NODE{n}_ADDR": f"10.0.0.{n + 1}" for n in range(16)}


def argv_of(line: str, study: Path) -> list[str]:
    """A script's command as the engine receives it: variables expanded, the device prefix
    dropped, the config file named by its full path."""
    words = shlex.split(os.path.expandvars(_checked_refs(line)))
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]
    if "--config" in words:
        at = words.index("--config") + 1
        words[at] = str(study / words[at])
    return words


def _checked_refs(line: str) -> str:
    """``"${NODE0_ADDR:?...}"`` -> ``$NODE0_ADDR`` so ``os.path.expandvars`` fills it."""
    import re

    return re.sub(r"\$\{([A-Z0-9_]+):\?[^}]*\}", r"$\1", line)


def cases(engine: str, model_dirs: dict[str, str], folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for study in STUDIES:
        plan = load_plan(study / "plan.json")
        section = plan.engines.get(engine)
        if not isinstance(section, EngineSection):
            continue
        name = f"{study.name}/{engine}"

        def local(words: list[str]) -> list[str]:
            """Checkpoint ids -> local config directories, in the argv and in a copy of the
            config file (SGLang's resolution reads the models' config.json)."""
            if engine != "sglang":
                return words
            words = [model_dirs.get(w, w) for w in words]
            if "--config" in words:
                at = words.index("--config") + 1
                mapping = yaml.safe_load(Path(words[at]).read_text())
                mapping = {k: model_dirs.get(v, v) if isinstance(v, str) else v
                           for k, v in mapping.items()}  # fmt: skip
                copy = folder / f"{study.name}-{Path(words[at]).name}"
                copy.write_text(yaml.safe_dump(mapping, sort_keys=False))
                words[at] = str(copy)
            return words

        out[f"{name}/command"] = local(list(section.args))
        out[f"{name}/file"] = local(argv_of(section.launch, study))
        for node in section.nodes:
            for i, line in enumerate(node.commands):
                out[f"{name}/node{node.node}.{i}"] = local(argv_of(line, study))
    return out


def local_models(folder: Path) -> dict[str, str]:
    """Checkpoint and drafter ids of every study -> a local directory with that model's
    ``config.json`` (for SGLang's resolution, which reads it)."""
    found: dict[str, str] = {}
    for study in STUDIES:
        plan = load_plan(study / "plan.json")
        section = plan.engines.get("sglang")
        if not isinstance(section, EngineSection):
            continue
        configs = {section.checkpoint.model_id: to_hf_config(get_model(plan.model))}
        spec = plan.speculative
        if spec and spec.draft_model and spec.method == "draft":
            configs[spec.draft_model] = to_hf_config(get_model(spec.draft_model))
        elif spec and spec.draft_model:  # an EAGLE-3 head: one layer of the target's shape
            head = to_hf_config(get_model(plan.model))
            head.update(architectures=["LlamaForCausalLMEagle3"], num_hidden_layers=1,
                        draft_vocab_size=32000)  # fmt: skip
            configs[spec.draft_model] = head
        for model_id, config in configs.items():
            target = folder / model_id.replace("/", "--")
            target.mkdir(parents=True, exist_ok=True)
            (target / "config.json").write_text(json.dumps(config))
            found[model_id] = str(target)
    return found


def parse(python: str, script: str, batch: dict[str, list[str]], *extra: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(batch, handle)
    done = subprocess.run(
        [python, str(HERE / script), handle.name, *extra], capture_output=True, text=True
    )
    os.unlink(handle.name)
    if not done.stdout.strip():
        raise SystemExit(f"{script} printed nothing:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def settings(result: dict, engine: str) -> dict:
    if engine == "vllm":
        return result.get("engine_args") or {}
    return result.get("resolved") or result.get("server_args") or {}


def differences(a: dict, b: dict, ignore: set[str] = frozenset()) -> list[str]:
    keys = sorted((set(a) | set(b)) - ignore)
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default="/work/engine-envs/vllm/bin/python")
    parser.add_argument("--sglang-python", default="/work/engine-envs/sglang/bin/python")
    args = parser.parse_args()
    os.environ.update(ADDRESSES)
    failures = 0
    with tempfile.TemporaryDirectory() as folder:
        runs = {
            "vllm": parse(args.vllm_python, "vllm_parse.py", cases("vllm", {}, Path(folder))),
            "sglang": parse(
                args.sglang_python, "sglang_parse.py",
                cases("sglang", local_models(Path(folder)), Path(folder)),
            ),
        }  # fmt: skip
    for engine, batch in runs.items():
        results = batch.get("results", batch)
        print(f"== {engine}: {len(results)} launch lines")
        by_study: dict[str, dict[str, dict]] = {}
        for case, result in results.items():
            study, _, form = case.rpartition("/")
            by_study.setdefault(study, {})[form] = result
            warnings = sorted({r.get("message", "")[:90] for r in result.get("log_records", [])})
            status = "ok" if result.get("ok") else f"ERROR {result.get('error')}"
            print(f"{case}: {status}" + (f" (warnings: {warnings})" if warnings else ""))
            failures += not result.get("ok")
        for study, forms in sorted(by_study.items()):
            file_form = settings(forms.get("file", {}), engine)
            same = differences(settings(forms.get("command", {}), engine), file_form, DRAWN)
            print(f"{study}: command line vs config file: {'same settings' if not same else same}")
            failures += bool(same)
            for form, result in sorted(forms.items()):
                if form.startswith("node"):
                    apart = differences(
                        settings(result, engine), file_form, PER_NODE[engine] | DRAWN
                    )
                    print(f"{study}/{form} vs config file: "
                          f"{'same settings but rank, rendezvous and port' if not apart else apart}")  # fmt: skip
                    failures += bool(apart)
    print(f"== {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
