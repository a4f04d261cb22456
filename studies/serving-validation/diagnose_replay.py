"""Each decode-graph replay checked on its own (run through diagnose.py's loop): the static
inputs read back and compared with the host's before the replay, the graph's sampled-row index
after it, and the first replay that faults named with its inputs.

    python3 studies/serving-validation/diagnose_replay.py PLAN.json [diagnose.py options]
"""

from __future__ import annotations

import runpy
import sys

import numpy as np
import torch

from executor import serving_graphs

count = {"replays": 0}
original_capture = serving_graphs.PagedDecodeGraphs._capture


def capture(self, size):
    graph, tokens, positions, tables, out, batch = original_capture(self, size)
    print(f"captured bucket {size}: tokens {tokens.data_ptr():#x} positions "
          f"{positions.data_ptr():#x} tables {tables.data_ptr():#x}", flush=True)  # fmt: skip
    return graph, tokens, positions, tables, out, batch


def run(self, tokens, positions, tables):
    n = len(tokens)
    serving_graphs.check_inputs(tokens, positions, self.model.spec.vocab_size,
                                self.max_seq_length)  # fmt: skip
    graph, tokens_buf, positions_buf, tables_buf, out, _ = self.graphs[self.bucket(n)]
    size = tokens_buf.shape[1]
    padded = np.full((size, self.width), self.scratch, dtype=np.int64)
    padded[:n] = tables
    tokens_buf.copy_(torch.from_numpy(np.pad(tokens, (0, size - n)))[None])
    positions_buf.copy_(torch.from_numpy(np.pad(positions, (0, size - n))))
    tables_buf.copy_(torch.from_numpy(padded))
    torch.cuda.synchronize()
    bad = [name for name, buf, want in (("tokens", tokens_buf[0, :n], tokens),
                                        ("positions", positions_buf[:n], positions),
                                        ("tables", tables_buf[:n], tables))
           if not np.array_equal(buf.cpu().numpy(), want)]  # fmt: skip
    count["replays"] += 1
    context = (f"replay {count['replays']}: n={n} bucket={size} positions "
               f"{positions.min()}..{positions.max()} tokens {tokens.min()}..{tokens.max()} "
               f"blocks {tables.min()}..{tables.max()}")  # fmt: skip
    if bad:
        print(f"{context}: static inputs differ after the copy: {bad}", flush=True)
    try:
        graph.replay()
        torch.cuda.synchronize()
    except Exception as error:  # the device assert: say which replay, then stop
        print(f"{context}: FAULT {str(error).splitlines()[0]}", flush=True)
        sys.exit(3)
    return out[0][:n]


serving_graphs.PagedDecodeGraphs._capture = capture
serving_graphs.PagedDecodeGraphs.run = run
sys.argv = ["diagnose.py", *sys.argv[1:]]
runpy.run_path("studies/serving-validation/diagnose.py", run_name="__main__")
