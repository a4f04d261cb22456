"""The ``tune`` command: parse, call one function, print.

Each verb lives in ``tuner/commands/<verb>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Those modules import only argparse at module level, so ``tune --help`` stays
instant; the simulator, optuna, matplotlib and torch are imported inside ``run``.

Errors: a ``RooftuneError`` becomes one line on stderr and its ``exit_code``; Ctrl-C exits 130.
Exit codes: 0 success, 1 runtime failure, 2 bad input, 3 no configuration meets the SLOs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence

# Verbs that compute and print (their files written whole by ``simulator.files``), and end holding
# no connection, worker process or GPU: as a process of their own, ``main`` runs them without the
# cyclic garbage collector (see ``_run_short``).
SHORT_VERBS = frozenset({"predict", "capacity", "hardware", "models", "schema"})

# Order shown in `tune --help`.
COMMANDS = (
    "plan",
    "predict",
    "capacity",
    "roofline",
    "report",
    "export",
    "schema",
    "worker",
    "calibrate",
    "measure",
    "validate",
    "hardware",
    "models",
    "bench",
)


def _available_commands(names: Sequence[str] = COMMANDS) -> list:
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(f"tuner.commands.{name}"))
        except ModuleNotFoundError as error:
            if error.name != f"tuner.commands.{name}":
                raise
    return modules


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, as every other error of ``tune`` (the usage is a
    ``--help`` away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` one verb's (a command line that names its verb needs
    no other: importing and building all of them is a fifth of ``tune predict``'s start)."""
    parser = _Parser(
        prog="tune",
        description="rooftune: predict, search and validate Llama deployments on NVIDIA GPUs.",
    )
    parser.add_argument("--version", action=_PrintVersion, help="show the version and exit")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _available_commands((only,) if only else COMMANDS):
        module.add_parser(subparsers)
    return parser


def _verb(argv: Sequence[str]) -> str | None:
    """The verb a command line names (its first word that is not an option), if it is one."""
    words = [word for word in argv if not word.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


class _PrintVersion(argparse.Action):
    """``--version``, looked up only when asked (package metadata is slow to import)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(message=f"rooftune {_version()}\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rooftune")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line: ``argv``, or the process's own (``sys.argv``), after which the
    interpreter exits."""
    if argv is not None:
        return _main(list(argv))
    argv = sys.argv[1:]
    if _verb(argv) in SHORT_VERBS:
        return _run_short(argv)
    return _main(argv)


def _run_short(argv: list[str]) -> int:
    """A short verb as the whole process, without the cyclic garbage collector.

    Its passes walk every object the imports made (numpy's, pydantic's schemas) over and over:
    10 ms of a 0.23 s ``tune predict``, and 25 ms more at exit, where Python collects everything
    once again only to free memory the OS takes back anyway. These verbs make next to no cyclic
    garbage (the same peak memory with the collector off, even simulating 20,000 requests), so
    it stays off, and the objects left at the end are frozen out of the exit's collections.
    atexit handlers, flushing stdout and freeing everything outside reference cycles run as
    before; only finalizers of objects in cycles are skipped, which Python never promises at
    exit.
    """
    gc.disable()
    code = _main(argv)
    gc.freeze()
    return code


def _main(argv: list[str]) -> int:
    parser = build_parser(_verb(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from simulator.errors import RooftuneError

    try:
        return int(args.run(args) or 0)
    except RooftuneError as error:
        if args.debug:
            raise
        print(f"tune {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"tune {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except ModuleNotFoundError as error:
        if args.debug:
            raise
        # The GPU verbs need the executor's extra (torch, triton); the rest never import it.
        print(
            f"tune {args.command}: error: this needs the {error.name} package, which is not "
            "installed (pip install -e '.[executor]' on a machine with a GPU)",
            file=sys.stderr,
        )
        return 2
    except OSError as error:  # a file that cannot be written (or read): the path and why
        if args.debug:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"tune {args.command}: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except Exception as error:  # not one of ours: still one line, the traceback on request
        if args.debug:
            raise
        print(
            f"tune {args.command}: internal error: {type(error).__name__}: {error} "
            "(rerun with tune --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
