"""How many Triton kernels this process has compiled.

A Triton compile takes about a second. One inside a timed serving iteration is a latency
outlier of the executor, not of the cost model, so the serving loop counts compiles per
iteration (``IterationRecord.compiles``) and the validation reports any that landed in a timed
run. The count comes from Triton's post-compile hook, chained after any hook already set;
where Triton or the hook is missing (a CPU machine, the interpreter), nothing compiles and the
count stays 0.
"""

from __future__ import annotations

__all__ = ["count", "install", "since"]

_compiled: list[str] = []


def install() -> bool:
    """Count compiles from now on (once per process); False where Triton has no hook."""
    try:
        from triton import knobs
    except ImportError:
        return False
    runtime = getattr(knobs, "runtime", None)
    if runtime is None or not hasattr(runtime, "jit_post_compile_hook"):
        return False
    previous = runtime.jit_post_compile_hook
    if getattr(previous, "counts_compiles", False):
        return True

    def counted(*args, **kwargs):
        function = kwargs.get("fn")
        _compiled.append(getattr(function, "name", "?"))
        return previous(*args, **kwargs) if previous is not None else None

    counted.counts_compiles = True  # type: ignore[attr-defined]
    runtime.jit_post_compile_hook = counted
    return True


def count() -> int:
    """Compiles counted so far in this process."""
    return len(_compiled)


def since(start: int) -> tuple[str, ...]:
    """The kernels compiled after the first ``start`` (a ``count()`` taken earlier), by name."""
    return tuple(_compiled[start:])
