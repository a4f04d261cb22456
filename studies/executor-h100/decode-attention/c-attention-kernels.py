"""Per-layer decode attention time in CUDA graphs: one-kernel vs rope+SDPA vs old partial+merge."""

import sys, json, torch, torch.nn.functional as F

sys.path.insert(0, ".whl")
import old_decode_attention as old
from executor import decode_attention as new, elementwise
from executor.model import KVCache

REPS = 64


def timed(fn):
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(REPS):
            fn()
    times = []
    for _ in range(30):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / REPS)
    times.sort()
    return times[len(times) // 2]


out = {}
for batch, kvh, length in [
    (1, 8, 1025),
    (1, 4, 1025),
    (16, 8, 1025),
    (64, 8, 4097),
    (1, 8, 16385),
]:
    heads = 4 * kvh
    cache = KVCache(batch, kvh, length + 16, 128, torch.bfloat16, "cuda")
    cache.k.normal_()
    cache.v.normal_()
    qkv = torch.randn(batch, 1, heads + 2 * kvh, 128, device="cuda", dtype=torch.bfloat16)
    cos, sin = torch.rand(1, 128, device="cuda"), torch.rand(1, 128, device="cuda")
    pos = torch.tensor([length - 1], device="cuda")

    def sdpa():
        elementwise.rope_cache(qkv, cos, sin, heads, kvh, cache, pos)
        q = qkv[:, :, :heads].transpose(1, 2)
        k, v = cache.read(batch, q.dtype, length)
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    def two():
        elementwise.rope_cache(qkv, cos, sin, heads, kvh, cache, pos)
        return old.decode_attention(qkv[:, :, :heads].transpose(1, 2), cache, length)

    row = {"rope+sdpa": timed(sdpa), "rope+partial+merge": timed(two)}
    for target in (64, 128, 256, 512):
        new.TARGET_PROGRAMS = target
        row[f"one-kernel@{target}"] = timed(
            lambda: new.decode_attention(qkv, cos, sin, pos, cache, length, heads)
        )
    new.TARGET_PROGRAMS = 256
    row["rope alone"] = timed(
        lambda: elementwise.rope_cache(qkv, cos, sin, heads, kvh, cache, pos)
    )
    out[f"B{batch} kvh{kvh} L{length}"] = row
    print(f"B{batch} kvh{kvh} L{length}", {k: round(v, 2) for k, v in row.items()}, flush=True)
json.dump(
    {"gpu": torch.cuda.get_device_name(), "us_per_layer": out}, open(sys.argv[1], "w"), indent=1
)
