#!/usr/bin/env python
"""Parse an SGLang server argv with SGLang's own parser (no GPU, no weights).

Usage:
    /work/engine-envs/sglang/bin/python studies/handover/parser-check/sglang_parse.py ARGV.json \
        [--out OUT.json] [--resolve none|emulated-gpu] \
        [--gpu-name "NVIDIA H100 80GB HBM3"] [--gpu-mem-mib 81559] \
        [--gpu-count 8] [--gpu-cc 9.0]

ARGV.json: a JSON list of strings (or a JSON object {case name: list} for a
batch; every case runs in the same process). Accepted forms:
    ["sglang", "serve", "MODEL", "--tp-size", "2", ...]   (sglang/cli/serve.py:
        --model-type is removed and a leading positional model becomes
        --model-path, exactly like _extract_model_type_override and
        _normalize_positional_model_path)
    ["python", "-m", "sglang.launch_server", "--model-path", ...]
    ["--model-path", "MODEL", ...]                         (raw argv)

Stage 1 (always): sglang.srt.server_args.prepare_server_args(argv) -- the
  function both `sglang serve` (cli/serve.py:_run_llm) and
  `python -m sglang.launch_server` call. It builds argparse.ArgumentParser
  (prog "sglang serve"), expands `--config FILE.yaml` with
  ConfigArgumentMerger, parses, and returns the RAW ServerArgs record.
  In 0.5.23 ServerArgs.__post_init__ does nothing; nothing is resolved here
  and the model's config.json is NOT read. -> "server_args" (all fields).

Stage 2 (--resolve emulated-gpu, the default): ServerArgs.resolve_once(), which
  launch_server.run_server calls before starting anything. It reads the
  model's config.json and the GPU's memory/compute capability and fills in
  defaults (mem_fraction_static, chunked_prefill_size, cuda graph sizes,
  attention backend, ...). There is no GPU here, so the script EMULATES one:
  torch.cuda.is_available/device_count/get_device_capability/
  get_device_name/get_device_properties/mem_get_info are patched to report
  --gpu-count GPUs named --gpu-name with --gpu-mem-mib MiB each (nvidia-smi is
  absent, so SGLang falls back to torch.cuda.mem_get_info, see
  sglang/srt/utils/common.py:get_nvgpu_memory_capacity), and the process is
  re-executed with LD_LIBRARY_PATH=/work/engine-envs/cuda-stub (stub
  libcuda.so.1 so sgl_kernel's CUDA ops import). Results of stage 2 are only
  as good as that emulation: "resolved" (ServerArgs.resolved_dict()) and
  "changed_by_resolution" (fields whose resolved value differs from raw).
  Then ServerArgs.check_server_args() runs, as Engine._launch_subprocesses
  (srt/entrypoints/engine.py) does right after resolve_once().
  With --resolve none, stage 2 is skipped.

Output: one JSON object on stdout (SGLang's logging goes to stderr and is also
captured into "log_records").
"""

import ctypes
import json
import logging
import os
import sys
import traceback
import warnings

CUDA_STUB_DIR = os.environ.get("SGLANG_PARSE_CUDA_STUB_DIR", "/work/engine-envs/cuda-stub")


def _opt(name, default):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


RESOLVE = _opt("--resolve", "emulated-gpu")
GPU_NAME = _opt("--gpu-name", "NVIDIA H100 80GB HBM3")
GPU_MEM_MIB = int(_opt("--gpu-mem-mib", "81559"))
GPU_COUNT = int(_opt("--gpu-count", "8"))
GPU_CC = tuple(int(x) for x in _opt("--gpu-cc", "9.0").split("."))


def _maybe_reexec_with_cuda_stub():
    try:
        ctypes.CDLL("libcuda.so.1")
        return
    except OSError:
        pass
    if os.environ.get("_SGLANG_PARSE_REEXEC") == "1":
        raise SystemExit(f"libcuda.so.1 stub not loadable from {CUDA_STUB_DIR}")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = CUDA_STUB_DIR + (
        ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else ""
    )
    env["_SGLANG_PARSE_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _emulate_gpu():
    """Patch torch.cuda so SGLang's resolution sees GPU_COUNT x GPU_NAME.
    Must run before sglang is imported (several helpers are lru_cached)."""
    import types

    import torch

    total = GPU_MEM_MIB * 1024 * 1024
    props = types.SimpleNamespace(
        name=GPU_NAME,
        total_memory=total,
        major=GPU_CC[0],
        minor=GPU_CC[1],
        multi_processor_count=132,
        uuid="GPU-emulated",
        L2_cache_size=50 * 1024 * 1024,
        gcnArchName="",
        is_integrated=False,
        warp_size=32,
    )
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: GPU_COUNT
    torch.cuda.get_device_capability = lambda device=None: GPU_CC
    torch.cuda.get_device_name = lambda device=None: GPU_NAME
    torch.cuda.get_device_properties = lambda device=None: props
    torch.cuda.mem_get_info = lambda device=None: (total, total)
    torch.cuda.current_device = lambda: 0
    torch.cuda.set_device = lambda device: None
    torch.cuda.is_initialized = lambda: True


def to_jsonable(obj, _depth=0):
    import dataclasses
    import enum

    if _depth > 12:
        return repr(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value if isinstance(obj.value, (str, int)) else obj.name
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, _depth + 1) for v in obj]
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    if dataclasses.is_dataclass(obj):
        return {
            f.name: to_jsonable(getattr(obj, f.name, None), _depth + 1)
            for f in dataclasses.fields(obj)
        }
    try:
        import msgspec

        if isinstance(obj, msgspec.Struct):
            return to_jsonable(msgspec.structs.asdict(obj), _depth + 1)
    except ImportError:
        pass
    return repr(obj)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(
            {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        )


def normalize_argv(argv):
    """Return (argv for prepare_server_args, note)."""
    a = list(argv)
    if a[:2] == ["sglang", "serve"] or a[:1] == ["serve"]:
        a = a[2:] if a[0] == "sglang" else a[1:]
        # sglang/cli/serve.py:_extract_model_type_override
        out, i = [], 0
        while i < len(a):
            if a[i] == "--model-type":
                i += 2
                continue
            if a[i].startswith("--model-type="):
                i += 1
                continue
            out.append(a[i])
            i += 1
        # sglang/cli/serve.py:_normalize_positional_model_path
        if out and not out[0].startswith("-"):
            out = ["--model-path", out[0], *out[1:]]
        return out, "sglang serve"
    if a[:3] == ["python", "-m", "sglang.launch_server"] or a[:3] == [
        "python3",
        "-m",
        "sglang.launch_server",
    ]:
        return a[3:], "python -m sglang.launch_server"
    return a, "raw"


def parse_one(argv_in):
    from sglang.srt.arg_groups.arg_utils import record_fields
    from sglang.srt.server_args import prepare_server_args

    argv, entry = normalize_argv(argv_in)
    result = {
        "ok": False,
        "parse_ok": False,
        "error": None,
        "entrypoint": entry,
        "argv_in": argv_in,
        "argv_to_prepare_server_args": argv,
        "resolve_mode": RESOLVE,
    }
    if RESOLVE == "emulated-gpu":
        result["emulated_gpu"] = {
            "name": GPU_NAME,
            "mem_mib": GPU_MEM_MIB,
            "count": GPU_COUNT,
            "compute_capability": list(GPU_CC),
        }
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)

    # Record the argv after --config expansion (no behaviour change).
    try:
        from sglang.srt.utils.server_args_config_parser import ConfigArgumentMerger

        orig_merge = ConfigArgumentMerger.merge_config_with_args

        def merge(self, cli_args):
            merged = orig_merge(self, cli_args)
            result["argv_after_config_expansion"] = list(merged)
            return merged

        ConfigArgumentMerger.merge_config_with_args = merge
    except ImportError:
        orig_merge = None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sa = prepare_server_args(list(argv))
            # basicConfig(force=True) in prepare_server_args drops root handlers
            if capture not in root.handlers:
                root.addHandler(capture)
            raw = {f.name: getattr(sa, f.name) for f in record_fields(type(sa))}
            result["server_args"] = to_jsonable(raw)
            result["parse_ok"] = True
            result["ok"] = True
            if RESOLVE != "none":
                result["resolve_ok"] = False
                try:
                    sa.resolve_once()
                    result["resolve_ok"] = True
                    # Engine._launch_subprocesses (srt/entrypoints/engine.py)
                    # runs check_server_args() right after resolve_once().
                    result["check_server_args_ok"] = False
                    sa.check_server_args()
                    result["check_server_args_ok"] = True
                    resolved = to_jsonable(sa.resolved_dict())
                    result["resolved"] = resolved
                    raw_j = result["server_args"]
                    result["changed_by_resolution"] = {
                        k: {"given": raw_j.get(k), "resolved": v}
                        for k, v in resolved.items()
                        if raw_j.get(k) != v
                    }
                except BaseException as e:  # noqa: BLE001
                    result["ok"] = False
                    stage = (
                        "check_server_args"
                        if result.get("resolve_ok")
                        else "resolve_once"
                    )
                    result["error"] = f"{stage}: {type(e).__name__}: {e}"
                    result["traceback"] = traceback.format_exc()
        except SystemExit as e:
            result["error"] = f"SystemExit({e.code}) (argparse error; see stderr)"
        except BaseException as e:  # noqa: BLE001
            result["error"] = f"{type(e).__name__}: {e}"
            result["traceback"] = traceback.format_exc()
    if orig_merge is not None:
        ConfigArgumentMerger.merge_config_with_args = orig_merge
    root.removeHandler(capture)
    result["log_records"] = capture.records
    result["python_warnings"] = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if "sglang" in (w.filename or "") and "Only CUDA" not in str(w.message)
    ]
    return result


def main():
    if RESOLVE == "emulated-gpu":
        _maybe_reexec_with_cuda_stub()
        _emulate_gpu()
    elif RESOLVE != "none":
        raise SystemExit("--resolve must be 'none' or 'emulated-gpu'")
    out_file = _opt("--out", None)
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    if isinstance(spec, dict):
        # Resolution writes os.environ (e.g. handle_environment_variables);
        # restore it between cases so one case cannot leak into the next.
        results = {}
        for name, a in spec.items():
            saved_env = dict(os.environ)
            results[name] = parse_one(a)
            os.environ.clear()
            os.environ.update(saved_env)
        ok = all(r["ok"] for r in results.values())
    else:
        results = parse_one(spec)
        ok = results["ok"]
    text = json.dumps(results, indent=2, default=repr)
    if out_file:
        with open(out_file, "w") as f:
            f.write(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
