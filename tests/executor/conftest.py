"""Tiny float32 Llama configs so every executor test runs in about a second on a CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from simulator.data.specs import ModelSpec  # noqa: E402


def tiny_spec(**overrides) -> ModelSpec:
    values = dict(
        name="tiny-llama",
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=128,
        vocab_size=96,
        max_position_embeddings=256,
        rope_theta=500000.0,
        rope_scaling={
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
            "rope_type": "llama3",
        },
    )
    values.update(overrides)
    return ModelSpec(**values)


@pytest.fixture
def spec() -> ModelSpec:
    return tiny_spec()


@pytest.fixture
def model(spec):
    from executor.engine import build_model

    return build_model(spec, device="cpu", dtype=torch.float32, seed=0, fused_kernels=False)


_PROBE = """
import torch, triton, triton.language as tl

@triton.jit
def double(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n) * 2, mask=offsets < n)

x = torch.ones(3)
double[(1,)](x, 3, BLOCK=4)
assert x.tolist() == [2.0, 2.0, 2.0]
"""


def run_in_interpreter(script: str) -> str:
    """Run ``script`` in a fresh Python with Triton's CPU interpreter on; return its stdout.
    Skips only when the interpreter itself cannot run a trivial kernel here; a failure of the
    script itself fails the test."""
    import os
    import subprocess
    import sys
    import textwrap

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TRITON_INTERPRET": "1"}

    def run(code: str):
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            cwd=root,
        )

    probe = run(_PROBE)
    if probe.returncode:
        pytest.skip(f"Triton's interpreter does not run here: {probe.stderr.strip()[-200:]}")
    out = run(script)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Replay:
    """A stand-in CUDA graph: its replay reruns the captured function on the same static
    buffers, as a real replay reruns the captured kernels on the same addresses."""

    def __init__(self, fn):
        self.fn = fn

    def replay(self):
        self.fn()


def rerun_capture(fn, pool=None):
    """A stand-in for ``executor.engine.capture_graph``: runs ``fn`` once, as a capture's
    warm-up does, and returns its ``Replay`` (and the pool, unused)."""
    fn()
    return Replay(fn), pool


def compile_for_hopper(
    kernel,
    types: dict[str, str],
    constants: dict[str, object],
    *,
    asm: str = "ptx",
    num_stages: int | None = None,
    divisible: tuple[str, ...] = (),
) -> str | int:
    """PTX of a ``@triton.jit`` kernel compiled for sm_90 on this CPU (Triton's own
    assembler): what the interpreter never does, so a kernel only a real compile refuses is
    caught here. ``types``: the Triton type of each pointer or float argument (``*bf16``,
    ``fp32``, ...), any other is ``i32``; ``constants``: the compile-time ones (any left out
    takes its default). ``asm="ttgir"`` returns the GPU-level IR instead (where the software
    pipeline's buffers show), compiled with ``num_stages`` if given; ``asm="shared"`` the bytes
    of shared memory one program takes (how many programs an SM holds); ``divisible`` names the
    arguments a launch would find divisible by 16 (pointers aligned to 16 bytes, strides), as
    Triton specializes them and as its vectorized and asynchronous loads need. Skips where this
    Triton build cannot assemble for sm_90."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    params = kernel.arg_names
    # A compile-time argument left out takes its default, as a launch that omits it does.
    constants = {**{p.name: p.default for p in kernel.params
                    if p.is_constexpr and p.has_default and p.name not in constants},
                 **constants}  # fmt: skip
    signature = {name: "constexpr" if name in constants else types.get(name, "i32")
                 for name in params}  # fmt: skip
    attrs = {(params.index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = ASTSource(fn=kernel, signature=signature, attrs=attrs,
                       constexprs={(params.index(k),): v for k, v in constants.items()})  # fmt: skip
    try:
        # FP fusion on, as every Triton up to 3.9 (the device's 3.6 too) compiles by default.
        options: dict[str, object] = {"enable_fp_fusion": True}
        if num_stages is not None:
            options["num_stages"] = num_stages
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        return compiled.metadata.shared if asm == "shared" else compiled.asm[asm]
    except RuntimeError as error:
        if "ptxas" in str(error).lower():
            pytest.skip(f"Triton cannot assemble for sm_90 here: {error}")
        raise


def ptxas_usage(ptx: str) -> tuple[int, int]:
    """(registers a thread, bytes spilled to local memory) of ``compile_for_hopper``'s PTX, as
    Triton's own ``ptxas -v`` reports them for sm_90a: a tile too large for the registers
    spills, and every spilled value is a round trip to memory."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx)
        source.flush()
        run = subprocess.run([get_ptxas(90).path, "-v", "-arch=sm_90a", source.name, "-o",
                              "/dev/null"], capture_output=True, text=True)  # fmt: skip
    if run.returncode:
        pytest.skip(f"ptxas cannot assemble this PTX here: {run.stderr.strip()[-200:]}")
    registers = re.search(r"Used (\d+) registers", run.stderr)
    spilled = re.search(r"(\d+) bytes spill stores", run.stderr)
    assert registers and spilled, run.stderr
    return int(registers.group(1)), int(spilled.group(1))
