"""Registers and spills of the paged decode-attention kernel, compiled for sm_90a on a CPU.

Triton compiles ``executor.decode_attention._decode_kernel`` with the constants a launch uses
(``kernel_constants``) and its own ``ptxas -v`` reports each variant's registers a thread and
bytes spilled; with ``maxnreg`` a cap is tried (what fewer registers would spill). Four warps of
R registers let floor(65,536 / (128 R)) programs share a Hopper SM, shared memory permitting.

    python3 studies/serving-validation/kernel_registers.py     # needs Triton, no GPU
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource

sys.path.insert(0, ".")
from executor import decode_attention as da  # noqa: E402
from tests.executor.test_decode_attention import aligned_arguments, kernel_types  # noqa: E402

# (cache, batch, query tokens, keys, register cap): a decode at one sequence and at 128, a
# verify's three tokens at one sequence, the FP8 cache's batch-128 point capped.
CASES = [("bf16", 1, 1, 1024, None), ("bf16", 128, 1, 4096, None), ("bf16", 1, 3, 8192, None),
         ("fp8", 1, 1, 1024, None), ("fp8", 128, 1, 4096, None), ("fp8", 128, 1, 4096, 168),
         ("fp8", 128, 1, 4096, 128)]  # fmt: skip


def usage(cache: str, batch: int, query: int, keys: int, maxnreg: int | None) -> str:
    fp8 = cache == "fp8"
    kernel, types = da._decode_kernel, kernel_types(fp8)
    constants = {**da.kernel_constants(batch, query, 32, 8, 128, keys, cache_fp8=fp8,
                                       fused=query == 1), "USE_PDL": True}  # fmt: skip
    names = kernel.arg_names
    constants = {**{p.name: p.default for p in kernel.params
                    if p.is_constexpr and p.has_default and p.name not in constants},
                 **constants}  # fmt: skip
    signature = {n: "constexpr" if n in constants else types.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned_arguments(types)}
    source = ASTSource(fn=kernel, signature=signature, attrs=attrs,
                       constexprs={(names.index(k),): v for k, v in constants.items()})  # fmt: skip
    options = {"enable_fp_fusion": True, "num_stages": da.NUM_STAGES}
    if maxnreg:
        options["maxnreg"] = maxnreg
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as ptx:
        ptx.write(compiled.asm["ptx"])
        ptx.flush()
        run = subprocess.run([get_ptxas(90).path, "-v", "-arch=sm_90a", ptx.name, "-o",
                              "/dev/null"], capture_output=True, text=True)  # fmt: skip
    registers = re.search(r"Used (\d+) registers", run.stderr).group(1)
    spilled = re.search(r"(\d+) bytes spill stores", run.stderr).group(1)
    return (f"{cache} cache, batch {batch}, {query} token(s), {keys} keys, "
            f"{constants['BLOCK_SPLITS']} chunks, cap {maxnreg or '-'}: {registers} registers, "
            f"{spilled} bytes spilled, shared {compiled.metadata.shared // 1024} KiB")  # fmt: skip


if __name__ == "__main__":
    for case in CASES:
        print(usage(*case), flush=True)
