"""Text from the user (study and model names, paths) made safe for where it is written.

A study name, a model path or a served-model name can hold a newline, quotes, ``$(...)`` or
HTML. Every place that writes such text into something another program reads goes through one
of these: a shell script's comment (``shell_comment``), a line to copy and paste
(``command_line``), Markdown prose (``markdown_text``) or a Markdown code block
(``markdown_code``). Nothing else in rooftune puts input text into a script or a report.
"""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EnvRef",
    "printable",
    "shell_word",
    "shell_comment",
    "command_line",
    "markdown_text",
    "markdown_code",
]

# Characters that start Markdown emphasis, code, links, tables or strikethrough; HTML's are
# escaped as entities first.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def printable(text: object) -> str:
    """``text`` on one line: every control character (newline, carriage return, escape...)
    spelled as its backslash escape, so it can neither end a line nor drive a terminal."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text)
    )


def shell_comment(text: object) -> str:
    """A bash comment line holding ``text``: one line, so nothing after it can run."""
    return f"# {printable(text)}"


@dataclass(frozen=True)
class EnvRef:
    """A word of a command that the operator's environment supplies (a node's address, a
    port): written as ``"${NAME:?...}"`` so the script stops, naming it, when it is unset.
    ``prefix`` / ``suffix`` are literal text around it (``host:${PORT}``)."""

    name: str
    prefix: str = ""
    suffix: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", self.name):
            raise ValueError(f"not an environment variable name: {self.name!r}")

    def shell(self) -> str:
        reference = f"${{{self.name}:?set {self.name} (see the top of this script)}}"
        return f'{_quoted_part(self.prefix)}"{reference}"{_quoted_part(self.suffix)}'


def _quoted_part(text: str) -> str:
    return shell_word(text) if text else ""


def shell_word(word: object) -> str:
    """One word for bash: ``shlex.quote`` unless it holds a control character, then bash's
    ANSI-C quoting (``$'...\\n...'``), which keeps the word exact and the line single.
    An ``EnvRef`` becomes its checked variable reference."""
    if isinstance(word, EnvRef):
        return word.shell()
    text = str(word)
    if text.isprintable():
        return shlex.quote(text)
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return "$'" + printable(escaped) + "'"


def command_line(argv: Iterable[object]) -> str:
    """A command to copy and paste or to run from a script: every word quoted, one line."""
    return " ".join(shell_word(word) for word in argv)


def markdown_text(text: object) -> str:
    """``text`` as inert Markdown prose: HTML escaped, Markdown syntax backslash-escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(printable(text), quote=False))


def markdown_code(text: str, language: str = "") -> str:
    """A fenced code block that ``text`` cannot close: the fence is longer than any run of
    backticks inside it; HTML-significant characters stay literal inside a fence."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"
