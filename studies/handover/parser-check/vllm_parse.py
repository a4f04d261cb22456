#!/usr/bin/env python
"""Parse a `vllm serve ...` argv with vLLM's own CLI parser (no engine, no GPU).

Usage:
    /work/engine-envs/vllm/bin/python studies/handover/parser-check/vllm_parse.py ARGV.json \
        [--out OUT.json] [--platform cuda|cpu]

--platform cuda (default): vLLM's CudaPlatform is forced, as on a GPU host.
  On a machine without an NVIDIA driver the script re-executes itself with
  LD_LIBRARY_PATH=/work/engine-envs/cuda-stub (a stub libcuda.so.1 whose
  functions all return CUDA_ERROR_NO_DEVICE) so that vllm's CUDA extension
  modules import. torch.cuda.is_available() stays False.
--platform cpu: VLLM_TARGET_DEVICE=cpu (vLLM's CpuPlatform).

ARGV.json is a JSON list of strings (or, for a batch, a JSON object mapping
case names to such lists; each case gets a fresh parser in the same process,
so vLLM's warning_once messages appear only in the first case that emits
them), one of:
    ["vllm", "serve", "MODEL", "--tensor-parallel-size", "2", ...]
    ["serve", "MODEL", ...]
    ["MODEL", "--tensor-parallel-size", "2", ...]   ("serve" is prepended)

What it does (mirrors vllm/entrypoints/cli/main.py:main and
vllm/entrypoints/cli/serve.py:ServeSubcommand.cmd up to the point where the
engine would be built):
  1. cli_env_setup()
  2. top-level FlexibleArgumentParser("vLLM CLI") + subparsers, every
     subcommand registered like main() does (falls back to `serve` only if an
     optional subcommand fails to import);
  3. parser.parse_args(argv)  -> this is where `--config FILE.yaml` is
     expanded (FlexibleArgumentParser.parse_args -> _pull_args_from_config ->
     load_config_file), `--model` is moved to the positional, `_`->`-` is
     normalised and dotted `--x.y` args are folded into JSON;
  4. configure_logging_from_args(args); ServeSubcommand.validate(args)
     (= validate_parsed_serve_args);
  5. args.model = args.model_tag (first line of ServeSubcommand.cmd);
  6. AsyncEngineArgs.from_cli_args(args) (runs EngineArgs.__post_init__,
     e.g. resolve_quantization_config). create_engine_config() is NOT called.

Prints one JSON object on stdout (logs go to stderr):
  ok, error, argv_in, argv_after_config_expansion, namespace (all fields of the
  argparse Namespace), engine_args (all dataclass fields of AsyncEngineArgs),
  non_default_engine_args, log_records (vllm logger WARNING+ and
  warnings.warn messages emitted while parsing).
"""

import ctypes
import dataclasses
import enum
import json
import logging
import os
import sys
import traceback
import warnings

# vLLM logs to stdout by default; keep stdout clean for the JSON result.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

CUDA_STUB_DIR = os.environ.get("VLLM_PARSE_CUDA_STUB_DIR", "/work/engine-envs/cuda-stub")


def _platform_from_argv() -> str:
    if "--platform" in sys.argv:
        return sys.argv[sys.argv.index("--platform") + 1]
    return "cuda"


def _maybe_reexec_with_cuda_stub() -> None:
    """CUDA platform on a machine without a driver: vllm/platforms/cuda.py
    imports vllm._C_stable_libtorch, which links libcuda.so.1. Provide a stub
    driver library (every call returns CUDA_ERROR_NO_DEVICE) via
    LD_LIBRARY_PATH; the loader reads that only at process start, so re-exec."""
    try:
        ctypes.CDLL("libcuda.so.1")
        return  # a driver (real or stub) is already loadable
    except OSError:
        pass
    if os.environ.get("_VLLM_PARSE_REEXEC") == "1":
        raise SystemExit(f"libcuda.so.1 stub not loadable from {CUDA_STUB_DIR}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = CUDA_STUB_DIR + (
        ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
    )
    env["_VLLM_PARSE_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _select_platform(platform: str) -> None:
    """Must run before anything else in vllm reads current_platform."""
    if platform == "cpu":
        os.environ["VLLM_TARGET_DEVICE"] = "cpu"
        return
    assert platform == "cuda", platform
    _maybe_reexec_with_cuda_stub()
    import vllm.platforms as vp

    if vp._current_platform is None:
        from vllm.platforms.cuda import CudaPlatform

        vp._current_platform = CudaPlatform()


def to_jsonable(obj, _depth=0):
    if _depth > 12:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.name if not isinstance(obj.value, (str, int)) else obj.value
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, _depth + 1) for v in obj]
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            try:
                out[f.name] = to_jsonable(getattr(obj, f.name), _depth + 1)
            except Exception as e:  # noqa: BLE001
                out[f.name] = f"<unreadable: {e!r}>"
        return out
    if hasattr(obj, "model_dump"):  # pydantic model
        try:
            return to_jsonable(obj.model_dump(), _depth + 1)
        except Exception:  # noqa: BLE001
            pass
    return repr(obj)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        if record.levelno >= logging.INFO:
            self.records.append(
                {
                    "level": record.levelname,
                    "logger": record.name,
                    "message": record.getMessage(),
                }
            )


def serve_cmd_prechecks(args):
    """Copy of the pure argument checks in ServeSubcommand.cmd (vLLM 0.33.0)."""
    errors = []
    if args.headless and args.api_server_count is not None and args.api_server_count > 0:
        errors.append(
            f"--api-server-count={args.api_server_count} cannot be used with "
            "--headless (no API servers are started in headless mode)."
        )
    is_external_lb = args.data_parallel_external_lb or args.data_parallel_rank is not None
    if not args.data_parallel_hybrid_lb and not args.data_parallel_multi_port_external_lb:
        is_hybrid_lb = args.data_parallel_start_rank is not None
        is_multi_port = False
    else:
        is_hybrid_lb = args.data_parallel_hybrid_lb
        is_multi_port = args.data_parallel_multi_port_external_lb
    if sum([is_multi_port, is_external_lb, is_hybrid_lb]) > 1:
        errors.append("Cannot use more than one data parallel load balancing mode.")
    mode = (
        "multi_port_external_lb" if is_multi_port
        else "headless" if args.headless
        else "external_lb" if is_external_lb
        else "hybrid_lb" if is_hybrid_lb
        else "internal_lb_or_single"
    )
    return {"ok": not errors, "errors": errors, "mode": mode}


def parse_one(argv, platform):
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    argv_in = list(argv)
    if argv and argv[0] == "vllm":
        argv = argv[1:]
    if not argv or argv[0] != "serve":
        argv = ["serve", *argv]

    result = {
        "ok": False,
        "error": None,
        "platform": platform,
        "argv_in": argv_in,
        "argv_parsed": argv,
    }
    capture = _Capture()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import vllm  # noqa: F401
            from vllm.logger import configure_logging_from_args

            logging.getLogger("vllm").addHandler(capture)

            from vllm.entrypoints.common.startup import (
                VLLM_SUBCMD_PARSER_EPILOG,
                cli_env_setup,
            )
            from vllm.utils.argparse_utils import FlexibleArgumentParser

            cli_env_setup()

            parser = FlexibleArgumentParser(
                description="vLLM CLI",
                epilog=VLLM_SUBCMD_PARSER_EPILOG.format(subcmd="[subcommand]"),
            )
            subparsers = parser.add_subparsers(required=False, dest="subparser")

            # Register subcommands like vllm/entrypoints/cli/main.py:main.
            import importlib

            mod_names = [
                "vllm.entrypoints.cli.openai",
                "vllm.entrypoints.cli.serve",
                "vllm.entrypoints.cli.launch",
                "vllm.entrypoints.cli.benchmark.main",
                "vllm.entrypoints.cli.collect_env",
                "vllm.entrypoints.cli.download_kernels",
                "vllm.entrypoints.cli.preload",
                "vllm.entrypoints.cli.run_batch",
                "vllm.entrypoints.cli.snapshot",
            ]
            cmds = {}
            skipped = []
            for name in mod_names:
                try:
                    mod = importlib.import_module(name)
                    if name.endswith(".snapshot"):
                        new_cmds = mod.cmd_init(create_requested=False)
                    else:
                        new_cmds = mod.cmd_init()
                except Exception as e:  # noqa: BLE001
                    if name.endswith(".serve"):
                        raise
                    skipped.append(f"{name}: {e!r}")
                    continue
                for cmd in new_cmds:
                    cmd.subparser_init(subparsers).set_defaults(
                        dispatch_function=cmd.cmd
                    )
                    cmds[cmd.name] = cmd
            result["skipped_subcommands"] = skipped

            # Record the argv after --config expansion (no behaviour change).
            orig_pull = parser._pull_args_from_config

            def _pull(args_list):
                expanded = orig_pull(args_list)
                result["argv_after_config_expansion"] = list(expanded)
                return expanded

            parser._pull_args_from_config = _pull

            args = parser.parse_args(argv)
            if args.subparser != "serve":
                raise SystemExit(f"expected the serve subcommand, got {args.subparser}")
            configure_logging_from_args(args)
            cmds["serve"].validate(args)

            # First step of ServeSubcommand.cmd
            if getattr(args, "model_tag", None) is not None:
                args.model = args.model_tag

            # The argument-only checks at the top of ServeSubcommand.cmd
            # (vllm/entrypoints/cli/serve.py), REPLICATED here because cmd()
            # itself goes on to start the server. Reported separately; they
            # do not modify args.
            result["serve_cmd_prechecks"] = serve_cmd_prechecks(args)

            ns = {
                k: v
                for k, v in vars(args).items()
                if k not in ("dispatch_function",)
            }
            result["namespace"] = to_jsonable(ns)

            from vllm.engine.arg_utils import AsyncEngineArgs

            engine_args = AsyncEngineArgs.from_cli_args(args)
            result["engine_args"] = to_jsonable(engine_args)
            defaults = AsyncEngineArgs.__dataclass_fields__
            non_default = {}
            for fname, f in defaults.items():
                if f.default is not dataclasses.MISSING:
                    dflt = f.default
                elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                    try:
                        dflt = f.default_factory()  # type: ignore[misc]
                    except Exception:  # noqa: BLE001
                        continue
                else:
                    continue
                val = getattr(engine_args, fname)
                try:
                    differs = to_jsonable(val) != to_jsonable(dflt)
                except Exception:  # noqa: BLE001
                    differs = True
                if differs:
                    non_default[fname] = to_jsonable(val)
            result["non_default_engine_args"] = non_default
            result["ok"] = True
        except SystemExit as e:
            result["error"] = f"SystemExit({e.code}) (argparse error; see stderr)"
        except BaseException as e:  # noqa: BLE001
            result["error"] = f"{type(e).__name__}: {e}"
            result["traceback"] = traceback.format_exc()
    result["log_records"] = [
        r for r in capture.records if r["level"] in ("WARNING", "ERROR", "CRITICAL")
    ]
    result["info_records"] = [r for r in capture.records if r["level"] == "INFO"]
    result["python_warnings"] = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if "vllm" in (w.filename or "") or issubclass(w.category, DeprecationWarning)
    ]
    logging.getLogger("vllm").removeHandler(capture)
    return result


def main():
    argv_file = sys.argv[1]
    platform = _platform_from_argv()
    _select_platform(platform)
    out_file = None
    if "--out" in sys.argv:
        out_file = sys.argv[sys.argv.index("--out") + 1]
    with open(argv_file) as f:
        spec = json.load(f)
    if isinstance(spec, dict):  # batch: {"case name": [argv...], ...}
        results = {name: parse_one(a, platform) for name, a in spec.items()}
        ok = all(r["ok"] for r in results.values())
    else:
        results = parse_one(spec, platform)
        ok = results["ok"]
    text = json.dumps(results, indent=2, sort_keys=False, default=repr)
    if out_file:
        with open(out_file, "w") as f:
            f.write(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
