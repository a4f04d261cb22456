"""Read an engine's argument definitions out of its released source, without importing it.

The engine configs rooftune writes are only as good as the flag names in them, and every engine
renames flags between releases. So the names the renderers may use are not typed by hand: this
script parses the engine's own source with :mod:`ast` and writes them to
``tuner/engines/flags/<engine>-<version>.json``, which the tests check every rendered flag and
YAML key against. Nothing is imported (the engines need CUDA, torch and their own native code).

What is read, per engine:

* **vLLM** (``--wheel vllm-X.whl``): every ``add_argument`` call in ``vllm/engine/arg_utils.py``
  and ``vllm/entrypoints/common/cli_args.py``, plus the fields of the ``FrontendArgs`` dataclass
  (each becomes ``--field-name``). A flag built from ``**x_kwargs["field"]`` takes its type from
  that field of the config dataclass ``x_kwargs = get_kwargs(ConfigClass)`` names
  (``vllm/config/*.py``): ``bool`` fields get a ``--no-`` twin (argparse
  ``BooleanOptionalAction``), ``Literal`` fields give the allowed values, and dataclass-typed
  fields (``--speculative-config``) give the keys their JSON/YAML mapping accepts.
* **SGLang** (``--wheel sglang-X.whl``): the annotated fields of the namespace classes in
  ``sglang/srt/arg_groups/fields/*.py`` (``field: A[type, "help"]`` or ``A[type, Arg(...)]``
  becomes ``--field-name`` plus ``Arg(aliases=...)``, unless ``Arg(no_cli=True)``), and the
  flags ``sglang/srt/server_args.py`` registers by hand.
* **TensorRT-LLM** (``--wheel`` or ``--source-dir`` of a checkout at a tag): the pydantic
  fields of ``TorchLlmArgs`` and its base in ``tensorrt_llm/llmapi/llm_args.py`` (the keys of
  the ``--config`` YAML, with nested keys for sub-configs) and the click options of the
  ``serve`` command in ``tensorrt_llm/commands/serve.py``.

Run: ``python -m tuner.engines.extract_flags --engine vllm --wheel /tmp/wheels/vllm-0.33.0-*.whl``
(``--out`` defaults to the flags folder beside this file).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from tuner.engines import source_ast as sa

__all__ = ["extract", "main"]

FLAGS_DIR = Path(__file__).with_name("flags")


# ---------------------------------------------------------------- reading sources
class _Sources:
    """Source files of one engine release, from a wheel (zip) or a directory tree."""

    def __init__(self, *, wheel: Path | None = None, source_dir: Path | None = None) -> None:
        self.wheel, self.source_dir = wheel, source_dir
        self.read: list[str] = []
        self._zip = zipfile.ZipFile(wheel) if wheel else None

    def names(self) -> list[str]:
        if self._zip:
            return self._zip.namelist()
        assert self.source_dir is not None
        return [str(p.relative_to(self.source_dir)) for p in self.source_dir.rglob("*.py")]

    def text(self, name: str) -> str:
        self.read.append(name)
        if self._zip:
            return self._zip.read(name).decode("utf-8")
        assert self.source_dir is not None
        return (self.source_dir / name).read_text(encoding="utf-8")

    def tree(self, name: str) -> ast.Module:
        return ast.parse(self.text(name), filename=name)


def _version_from_wheel(wheel: Path) -> str:
    # Wheel names are name-version-tags.whl (PEP 427).
    return wheel.name.split("-")[1]


def _no_form(flag: str) -> str:
    """The ``--no-x`` twin argparse's BooleanOptionalAction derives from ``--x``."""
    return "--no-" + flag[2:]


def _config_keys(flags: set[str], generated: set[str]) -> list[str]:
    """YAML keys of a flag-spelled config file: long flags without the dashes, minus the
    derived ``--no-`` twins (a YAML ``false`` already means the twin)."""
    return sorted(f[2:] for f in flags if f.startswith("--") and f not in generated)


# ---------------------------------------------------------------- vLLM
def _vllm(src: _Sources) -> dict:
    files = src.names()
    config_files = sorted(n for n in files if re.fullmatch(r"vllm/config/[a-z_]+\.py", n))
    extra = [n for n in ("vllm/model_executor/layers/quantization/__init__.py",) if n in files]
    arg_utils = src.tree("vllm/engine/arg_utils.py")
    frontend = src.tree("vllm/entrypoints/common/cli_args.py")
    modules = [src.tree(n) for n in config_files + extra] + [arg_utils, frontend]
    classes, aliases = sa.classes(modules), sa.literal_aliases(modules)

    def field_of(class_name: str, field: str) -> ast.AnnAssign | None:
        cls = classes.get(class_name)
        return sa.fields(cls, classes).get(field) if cls else None

    flags: set[str] = set()
    generated: set[str] = set()  # --no- twins: flags, but not keys of a config file
    choices: dict[str, list[str]] = {}
    nested: dict[str, list[str]] = {}
    nested_choices: dict[str, list[str]] = {}

    def record(names_: list[str], ann: ast.AnnAssign | None, boolean: bool) -> None:
        longs = [n for n in names_ if n.startswith("--")]
        flags.update(names_)
        if ann is not None:
            types = sa.names(ann.annotation)
            boolean = boolean or ("bool" in types and "str" not in types)
            allowed = sa.literal_values(ann.annotation, aliases)
            if allowed and longs:
                choices[longs[0]] = allowed
            sub = next((classes[t] for t in types if t in classes and t.endswith("Config")), None)
            if sub is not None and longs:
                sub_fields = sa.fields(sub, classes)
                nested[longs[0][2:]] = sorted(sub_fields)
                for key, sub_ann in sub_fields.items():
                    allowed = sa.literal_values(sub_ann.annotation, aliases)
                    if allowed:
                        nested_choices[f"{longs[0][2:]}.{key}"] = allowed
        if boolean:
            twins = {_no_form(n) for n in longs}
            generated.update(twins)
            flags.update(twins)

    for module in (arg_utils, frontend):
        kwargs_class: dict[str, str] = {}  # x_kwargs -> ConfigClass, from x = get_kwargs(C)
        for node in ast.walk(module):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                if sa.tail(node.value.func) == "get_kwargs" and node.value.args:
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            kwargs_class[target.id] = sa.tail(node.value.args[0])
        for node in ast.walk(module):
            if not (isinstance(node, ast.Call) and sa.tail(node.func) == "add_argument"):
                continue
            names_ = [s for a in node.args for s in sa.strings(a) if s.startswith("-")]
            if not names_:
                continue
            action = sa.kwarg(node, "action")
            boolean = sa.tail(action) == "BooleanOptionalAction" if action is not None else False
            ann = None
            for sub in ast.walk(node):  # **x_kwargs["field"], possibly inside {**...}
                if (
                    isinstance(sub, ast.Subscript)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id in kwargs_class
                    and isinstance(sub.slice, ast.Constant)
                    and isinstance(sub.slice.value, str)
                ):
                    ann = field_of(kwargs_class[sub.value.id], sub.slice.value)
                    break
            record(names_, ann, boolean)
    # The frontend registers one --flag per dataclass field of FrontendArgs (and its base).
    for name, ann in sa.fields(classes["FrontendArgs"], classes).items():
        record(["--" + name.replace("_", "-")], ann, False)
    return {
        "flags": sorted(flags),
        "config_keys": _config_keys(flags, generated),
        "choices": dict(sorted(choices.items())),
        "nested_keys": dict(sorted(nested.items())),
        "nested_choices": dict(sorted(nested_choices.items())),
    }


# ---------------------------------------------------------------- SGLang
def _sglang(src: _Sources) -> dict:
    files = src.names()
    field_files = sorted(
        n for n in files if re.fullmatch(r"sglang/srt/arg_groups/fields/\w+\.py", n)
    )
    choice_module = src.tree("sglang/srt/arg_groups/choices.py")
    server_args = src.tree("sglang/srt/server_args.py")
    field_modules = [src.tree(n) for n in field_files]
    aliases = sa.literal_aliases([choice_module, *field_modules])
    flags: set[str] = set()
    generated: set[str] = set()
    choices: dict[str, list[str]] = {}
    for module in field_modules:
        for cls in (n for n in module.body if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                ann = stmt.annotation
                if not (
                    isinstance(ann, ast.Subscript) and sa.tail(ann.value) in ("A", "Annotated")
                ):
                    continue
                parts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
                type_node, meta = parts[0], parts[1:]
                arg = next(
                    (m for m in meta if isinstance(m, ast.Call) and sa.tail(m.func) == "Arg"), None
                )
                has_help = any(
                    isinstance(m, ast.Constant) and isinstance(m.value, str) for m in meta
                )
                if arg is None and not has_help:
                    continue  # not registered automatically
                if arg is not None and isinstance(sa.kwarg(arg, "no_cli"), ast.Constant):
                    if sa.kwarg(arg, "no_cli").value is True:  # type: ignore[union-attr]
                        continue
                field = stmt.target.id
                cli = sa.strings(sa.kwarg(arg, "cli_name")) if arg is not None else []
                main_flag = cli[0] if cli else "--" + field.replace("_", "-")
                spellings = [main_flag] + (
                    sa.strings(sa.kwarg(arg, "aliases")) if arg is not None else []
                )
                flags.update(spellings)
                action = sa.kwarg(arg, "action") if arg is not None else None
                if action is not None and sa.tail(action) == "BooleanOptionalAction":
                    twins = {_no_form(s) for s in spellings if s.startswith("--")}
                    generated.update(twins)
                    flags.update(twins)
                choice_node = sa.kwarg(arg, "choices") if arg is not None else None
                allowed = sa.strings(choice_node)
                if not allowed and choice_node is not None:  # a name: CHOICES = [...]
                    allowed = sa.strings(aliases.get(sa.tail(choice_node)))
                if not allowed:
                    allowed = sa.literal_values(type_node, aliases)
                if allowed:
                    choices[main_flag] = sorted(set(allowed))
    for node in ast.walk(server_args):
        if isinstance(node, ast.Call) and sa.tail(node.func) == "add_argument":
            spellings = [s for a in node.args for s in sa.strings(a) if s.startswith("-")]
            flags.update(spellings)
            allowed = sa.strings(sa.kwarg(node, "choices"))
            if allowed and spellings:
                choices[spellings[0]] = sorted(set(allowed))
    return {
        "flags": sorted(flags),
        "config_keys": _config_keys(flags, generated),
        "choices": dict(sorted(choices.items())),
        "nested_keys": {},
        "nested_choices": {},
    }


# ---------------------------------------------------------------- TensorRT-LLM
def _trtllm(src: _Sources) -> dict:
    llm_args = src.tree("tensorrt_llm/llmapi/llm_args.py")
    serve = src.tree("tensorrt_llm/commands/serve.py")
    classes, aliases = sa.classes([llm_args]), sa.literal_aliases([llm_args])
    top = sa.fields(classes["TorchLlmArgs"], classes)
    keys = set(top) | {
        a for s in top.values() for a in sa.field_aliases(s) if not a.startswith("_")
    }
    nested: dict[str, list[str]] = {}
    nested_choices: dict[str, list[str]] = {}
    for key, stmt in top.items():
        sub_names = {n for n in sa.names(stmt.annotation) if n in classes}
        # A type alias such as SpeculativeConfig = Annotated[Union[A, B, ...], ...]
        for n in sa.names(stmt.annotation):
            if n in aliases:
                sub_names |= {m for m in sa.names(aliases[n]) if m in classes}
        if not sub_names:
            continue
        sub_keys: set[str] = set()
        for sub in sorted(sub_names):
            for name, sub_stmt in sa.fields(classes[sub], classes).items():
                sub_keys.update([name, *sa.field_aliases(sub_stmt)])
                allowed = sa.literal_values(sub_stmt.annotation, aliases)
                if allowed:
                    prev = nested_choices.get(f"{key}.{name}", [])
                    nested_choices[f"{key}.{name}"] = sorted(set(prev) | set(allowed))
        nested[key] = sorted(sub_keys)
    flags: set[str] = set()
    choices: dict[str, list[str]] = {}
    for fn in (n for n in ast.walk(serve) if isinstance(n, ast.FunctionDef)):
        commands = [
            d
            for d in fn.decorator_list
            if isinstance(d, ast.Call)
            and sa.tail(d.func) == "command"
            and sa.strings(d.args[0] if d.args else None) == ["serve"]
        ]
        if not commands:
            continue
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and sa.tail(deco.func) == "option":
                spellings = [s for a in deco.args for s in sa.strings(a) if s.startswith("-")]
                for s in spellings:  # click's "--x/--no-x" declares both at once
                    flags.update(s.split("/"))
                typ = sa.kwarg(deco, "type")
                if (
                    isinstance(typ, ast.Call)
                    and typ.args
                    and sa.strings(typ.args[0])
                    and spellings
                ):
                    choices[spellings[0]] = sorted(sa.strings(typ.args[0]))
    return {
        "flags": sorted(flags),
        "config_keys": sorted(keys),
        "choices": dict(sorted(choices.items())),
        "nested_keys": dict(sorted(nested.items())),
        "nested_choices": dict(sorted(nested_choices.items())),
    }


_EXTRACTORS: dict[str, Callable[[_Sources], dict]] = {
    "vllm": _vllm,
    "sglang": _sglang,
    "trtllm": _trtllm,
}


def extract(
    *,
    engine: str,
    wheel: Path | None = None,
    source_dir: Path | None = None,
    version: str | None = None,
    commit: str | None = None,
) -> dict:
    """The argument definitions of one engine release as a JSON-ready dict."""
    if engine not in _EXTRACTORS:
        raise ValueError(f"unknown engine {engine!r}; expected one of {sorted(_EXTRACTORS)}")
    if (wheel is None) == (source_dir is None):
        raise ValueError("give exactly one of wheel or source_dir")
    src = _Sources(wheel=wheel, source_dir=source_dir)
    body = _EXTRACTORS[engine](src)
    source: dict[str, str] = {}
    if wheel is not None:
        source = {"wheel": wheel.name, "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}
    if commit:
        source["commit"] = commit
    return {
        "engine": engine,
        "version": version or (_version_from_wheel(wheel) if wheel else "unknown"),
        "source": source,
        "files_read": sorted(set(src.read)),
        **body,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tuner.engines.extract_flags", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--engine", required=True, choices=sorted(_EXTRACTORS))
    parser.add_argument("--wheel", type=Path, help="the engine's released wheel")
    parser.add_argument("--source-dir", type=Path, help="a source checkout at a release tag")
    parser.add_argument("--version", help="version label (default: from the wheel name)")
    parser.add_argument("--commit", help="commit id of --source-dir, recorded in the output")
    parser.add_argument(
        "--out", type=Path, help="output JSON (default: flags/<engine>-<version>.json)"
    )
    args = parser.parse_args(argv)
    data = extract(
        engine=args.engine,
        wheel=args.wheel,
        source_dir=args.source_dir,
        version=args.version,
        commit=args.commit,
    )
    out = args.out or FLAGS_DIR / f"{args.engine}-{data['version']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(
        f"{args.engine} {data['version']}: {len(data['flags'])} flags, "
        f"{len(data['config_keys'])} config keys -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
