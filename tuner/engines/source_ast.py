"""Small readers over Python ASTs, for pulling argument definitions out of engine sources.

They answer questions like "which string literals does this list hold", "which values does this
``Literal[...]`` annotation allow (following ``Name = Literal[...]`` aliases)" and "which
annotated fields does this class declare, with its bases" without importing anything.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

__all__ = [
    "strings",
    "names",
    "literal_aliases",
    "literal_values",
    "tail",
    "classes",
    "fields",
    "kwarg",
    "field_aliases",
]


def strings(node: ast.AST | None) -> list[str]:
    """String constants of a list/tuple/set literal (or a lone string)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        ]
    return []


def names(node: ast.AST) -> set[str]:
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


def literal_aliases(modules: Iterable[ast.Module]) -> dict[str, ast.AST]:
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


def literal_values(node: ast.AST, aliases: dict[str, ast.AST], depth: int = 0) -> list[str]:
    """Allowed string values of a ``Literal`` annotation, following aliases (``A = Literal[..]``)."""
    if depth > 8:
        return []
    values: list[str] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Subscript) and tail(sub.value) == "Literal":
            elts = sub.slice.elts if isinstance(sub.slice, ast.Tuple) else [sub.slice]
            for elt in elts:
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                    values.append(elt.value)
                else:
                    values += literal_values(elt, aliases, depth + 1)
        elif isinstance(sub, (ast.Name, ast.Attribute)) and tail(sub) in aliases:
            alias = aliases[tail(sub)]
            if alias is not node:
                values += literal_values(alias, aliases, depth + 1)
    return sorted(set(values))


def tail(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def classes(modules: Iterable[ast.Module]) -> dict[str, ast.ClassDef]:
    return {
        node.name: node
        for module in modules
        for node in module.body
        if isinstance(node, ast.ClassDef)
    }


def fields(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> dict[str, ast.AnnAssign]:
    """Annotated public fields of a class and its bases (bases first, subclass wins)."""
    out: dict[str, ast.AnnAssign] = {}
    for base in cls.bases:
        if tail(base) in classes and tail(base) != cls.name:
            out.update(fields(classes[tail(base)], classes))
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            if name.startswith("_") or "ClassVar" in names(stmt.annotation):
                continue
            out[name] = stmt
    return out


def kwarg(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def field_aliases(stmt: ast.AnnAssign) -> list[str]:
    """Extra accepted spellings of a pydantic field: ``alias=`` / ``AliasChoices(...)``."""
    out: list[str] = []
    if isinstance(stmt.value, ast.Call):
        for key in ("alias", "validation_alias"):
            value = kwarg(stmt.value, key)
            if isinstance(value, ast.Call):
                out += [s for a in value.args for s in strings(a)]
            else:
                out += strings(value)
    return out
