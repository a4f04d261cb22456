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
from collections.abc import Callable, Iterable
from pathlib import Path

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


# ---------------------------------------------------------------- AST helpers
def _strings(node: ast.AST | None) -> list[str]:
    """String constants of a list/tuple/set literal (or a lone string)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return []


def _names(node: ast.AST) -> set[str]:
    """Every bare name and attribute tail in an annotation (``a.B | None`` -> {a, B, None})."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.Constant) and sub.value is None:
            out.add("None")
    return out


def _literal_aliases(modules: Iterable[ast.Module]) -> dict[str, ast.AST]:
    """Module-level ``Name = Literal[...]`` (or ``Name: TypeAlias = ...``) across files."""
    aliases: dict[str, ast.AST] = {}
    for module in modules:
        for stmt in module.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                target, value = stmt.target, stmt.value
            else:
                continue
            if isinstance(target, ast.Name):
                aliases.setdefault(target.id, value)
    return aliases


def _literal_values(node: ast.AST, aliases: dict[str, ast.AST], depth: int = 0) -> list[str]:
    """Allowed string values of a ``Literal`` annotation, following aliases (``A = Literal[..]``)."""
    if depth > 8:
        return []
    values: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Subscript) and _tail(sub.value) == "Literal":
            elts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
            for elt in elts:
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    values.append(elt.value)
                else:
                    values += _literal_values(elt, aliases, depth + 1)
        elif isinstance(sub, (ast.Name, ast.Attribute)) and _tail(sub) in aliases:
            alias = aliases[_tail(sub)]
            if alias is not node:
                values += _literal_values(alias, aliases, depth + 1)
    return sorted(set(values))


def _tail(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _classes(modules: Iterable[ast.Module]) -> dict[str, ast.ClassDef]:
    return {
        node.name: node
        for module in modules
        for node in module.body
        if isinstance(node, ast.ClassDef)
    }


def _fields(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> dict[str, ast.AnnAssign]:
    """Annotated public fields of a class and its bases (bases first, subclass wins)."""
    out: dict[str, ast.AnnAssign] = {}
    for base in cls.bases:
        if _tail(base) in classes and _tail(base) != cls.name:
            out.update(_fields(classes[_tail(base)], classes))
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            if name.startswith("_") or "ClassVar" in _names(stmt.annotation):
                continue
            out[name] = stmt
    return out


def _kwarg(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


_GENERATED: set[str] = set()  # --no- twins argparse/click derive; flags, not YAML keys


def _no_form(flag: str) -> str:
    _GENERATED.add("--no-" + flag[2:])
    return "--no-" + flag[2:]


def _config_keys(flags: set[str]) -> list[str]:
    """YAML keys of a flag-spelled config file: long flags without the dashes."""
    return sorted(f[2:] for f in flags if f.startswith("--") and f not in _GENERATED)


# ---------------------------------------------------------------- vLLM
def _vllm(src: _Sources) -> dict:
    names = src.names()
    config_files = sorted(n for n in names if re.fullmatch(r"vllm/config/[a-z_]+\.py", n))
    extra = [n for n in ("vllm/model_executor/layers/quantization/__init__.py",) if n in names]
    arg_utils = src.tree("vllm/engine/arg_utils.py")
    frontend = src.tree("vllm/entrypoints/common/cli_args.py")
    modules = [src.tree(n) for n in config_files + extra] + [arg_utils, frontend]
    classes, aliases = _classes(modules), _literal_aliases(modules)

    def field_of(class_name: str, field: str) -> ast.AnnAssign | None:
        cls = classes.get(class_name)
        return _fields(cls, classes).get(field) if cls else None

    flags: set[str] = set()
    choices: dict[str, list[str]] = {}
    nested: dict[str, list[str]] = {}
    nested_choices: dict[str, list[str]] = {}

    def record(names_: list[str], ann: ast.AnnAssign | None, boolean: bool) -> None:
        longs = [n for n in names_ if n.startswith("--")]
        flags.update(names_)
        if ann is not None:
            types = _names(ann.annotation)
            boolean = boolean or ("bool" in types and "str" not in types)
            allowed = _literal_values(ann.annotation, aliases)
            if allowed and longs:
                choices[longs[0]] = allowed
            sub = next((classes[t] for t in types if t in classes and t.endswith("Config")), None)
            if sub is not None and longs:
                sub_fields = _fields(sub, classes)
                nested[longs[0][2:]] = sorted(sub_fields)
                for key, sub_ann in sub_fields.items():
                    allowed = _literal_values(sub_ann.annotation, aliases)
                    if allowed:
                        nested_choices[f"{longs[0][2:]}.{key}"] = allowed
        if boolean:
            flags.update(_no_form(n) for n in longs)

    for module in (arg_utils, frontend):
        kwargs_class: dict[str, str] = {}  # x_kwargs -> ConfigClass, from x = get_kwargs(C)
        for node in ast.walk(module):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                if _tail(node.value.func) == "get_kwargs" and node.value.args:
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            kwargs_class[target.id] = _tail(node.value.args[0])
        for node in ast.walk(module):
            if not (isinstance(node, ast.Call) and _tail(node.func) == "add_argument"):
                continue
            names_ = [s for a in node.args for s in _strings(a) if s.startswith("-")]
            if not names_:
                continue
            action = _kwarg(node, "action")
            boolean = _tail(action) == "BooleanOptionalAction" if action is not None else False
            ann = None
            for sub in ast.walk(node):  # **x_kwargs["field"], possibly inside {**...}
                if (
                    isinstance(sub, ast.Subscript)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id in kwargs_class
                    and isinstance(sub.slice, ast.Constant)
                ):
                    ann = field_of(kwargs_class[sub.value.id], sub.slice.value)
                    break
            record(names_, ann, boolean)
    # The frontend registers one --flag per dataclass field of FrontendArgs (and its base).
    for name, ann in _fields(classes["FrontendArgs"], classes).items():
        record(["--" + name.replace("_", "-")], ann, False)
    return {
        "flags": sorted(flags),
        "config_keys": _config_keys(flags),
        "choices": dict(sorted(choices.items())),
        "nested_keys": dict(sorted(nested.items())),
        "nested_choices": dict(sorted(nested_choices.items())),
    }


# ---------------------------------------------------------------- SGLang
def _sglang(src: _Sources) -> dict:
    names = src.names()
    field_files = sorted(
        n for n in names if re.fullmatch(r"sglang/srt/arg_groups/fields/\w+\.py", n)
    )
    choice_module = src.tree("sglang/srt/arg_groups/choices.py")
    server_args = src.tree("sglang/srt/server_args.py")
    field_modules = [src.tree(n) for n in field_files]
    aliases = _literal_aliases([choice_module, *field_modules])
    flags: set[str] = set()
    choices: dict[str, list[str]] = {}
    for module in field_modules:
        for cls in (n for n in module.body if isinstance(n, ast.ClassDef)):
            for stmt in cls.body:
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                ann = stmt.annotation
                if not (isinstance(ann, ast.Subscript) and _tail(ann.value) in ("A", "Annotated")):
                    continue
                parts = ann.slice.elts if isinstance(ann.slice, ast.Tuple) else [ann.slice]
                type_node, meta = parts[0], parts[1:]
                arg = next(
                    (m for m in meta if isinstance(m, ast.Call) and _tail(m.func) == "Arg"), None
                )
                has_help = any(
                    isinstance(m, ast.Constant) and isinstance(m.value, str) for m in meta
                )
                if arg is None and not has_help:
                    continue  # not registered automatically
                if arg is not None and isinstance(_kwarg(arg, "no_cli"), ast.Constant):
                    if _kwarg(arg, "no_cli").value is True:  # type: ignore[union-attr]
                        continue
                field = stmt.target.id
                cli = _strings(_kwarg(arg, "cli_name")) if arg is not None else []
                main_flag = cli[0] if cli else "--" + field.replace("_", "-")
                spellings = [main_flag] + (
                    _strings(_kwarg(arg, "aliases")) if arg is not None else []
                )
                flags.update(spellings)
                action = _kwarg(arg, "action") if arg is not None else None
                if action is not None and _tail(action) == "BooleanOptionalAction":
                    flags.update(_no_form(s) for s in spellings if s.startswith("--"))
                allowed = _strings(_kwarg(arg, "choices")) if arg is not None else []
                if not allowed and arg is not None and _kwarg(arg, "choices") is not None:
                    allowed = _strings(aliases.get(_tail(_kwarg(arg, "choices")), None))
                if not allowed:
                    allowed = _literal_values(type_node, aliases)
                if allowed:
                    choices[main_flag] = sorted(set(allowed))
    for node in ast.walk(server_args):
        if isinstance(node, ast.Call) and _tail(node.func) == "add_argument":
            spellings = [s for a in node.args for s in _strings(a) if s.startswith("-")]
            flags.update(spellings)
            allowed = _strings(_kwarg(node, "choices"))
            if allowed and spellings:
                choices[spellings[0]] = sorted(set(allowed))
    return {
        "flags": sorted(flags),
        "config_keys": _config_keys(flags),
        "choices": dict(sorted(choices.items())),
        "nested_keys": {},
        "nested_choices": {},
    }


# ---------------------------------------------------------------- TensorRT-LLM
def _field_aliases(stmt: ast.AnnAssign) -> list[str]:
    """Extra accepted spellings of a pydantic field: ``alias=`` / ``AliasChoices(...)``."""
    out: list[str] = []
    if isinstance(stmt.value, ast.Call):
        for key in ("alias", "validation_alias"):
            value = _kwarg(stmt.value, key)
            if isinstance(value, ast.Call):
                out += [s for a in value.args for s in _strings(a)]
            else:
                out += _strings(value)
    return out


def _trtllm(src: _Sources) -> dict:
    llm_args = src.tree("tensorrt_llm/llmapi/llm_args.py")
    serve = src.tree("tensorrt_llm/commands/serve.py")
    classes, aliases = _classes([llm_args]), _literal_aliases([llm_args])
    top = _fields(classes["TorchLlmArgs"], classes)
    keys = set(top) | {a for s in top.values() for a in _field_aliases(s) if not a.startswith("_")}
    nested: dict[str, list[str]] = {}
    nested_choices: dict[str, list[str]] = {}
    for key, stmt in top.items():
        sub_names = {n for n in _names(stmt.annotation) if n in classes}
        # A type alias such as SpeculativeConfig = Annotated[Union[A, B, ...], ...]
        for n in _names(stmt.annotation):
            if n in aliases:
                sub_names |= {m for m in _names(aliases[n]) if m in classes}
        if not sub_names:
            continue
        sub_keys: set[str] = set()
        for sub in sorted(sub_names):
            for name, sub_stmt in _fields(classes[sub], classes).items():
                sub_keys.update([name, *_field_aliases(sub_stmt)])
                allowed = _literal_values(sub_stmt.annotation, aliases)
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
            and _tail(d.func) == "command"
            and _strings(d.args[0] if d.args else None) == ["serve"]
        ]
        if not commands:
            continue
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and _tail(deco.func) == "option":
                spellings = [s for a in deco.args for s in _strings(a) if s.startswith("-")]
                for s in spellings:  # click's "--x/--no-x" declares both at once
                    flags.update(s.split("/"))
                typ = _kwarg(deco, "type")
                if isinstance(typ, ast.Call) and typ.args and _strings(typ.args[0]) and spellings:
                    choices[spellings[0]] = sorted(_strings(typ.args[0]))
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
