"""Each decode-graph replay checked on its own (run through diagnose.py's loop): the static
inputs read back and compared with the host's before the replay, the first replay that faults
named with its inputs, and the replay's greedy tokens against the same decodes run eagerly
right after it (which rewrite the same K/V): where they differ, by how much the logits of the
two tokens differ, against the gap between the eager top two.

    python3 studies/serving-validation/diagnose_replay.py PLAN.json [diagnose.py options]
"""

from __future__ import annotations

import atexit
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
    from executor.ragged import RaggedBatch

    device = tokens_buf.device
    rows = torch.from_numpy(positions).to(device)

    def eager(max_length: int) -> torch.Tensor:
        batch = RaggedBatch(positions=rows, blocks=rows, offsets=rows,
                            tables=torch.from_numpy(np.ascontiguousarray(tables)).to(device),
                            decodes=n, chunks=[], sample_rows=torch.arange(n, device=device),
                            max_length=max_length)  # fmt: skip
        with torch.inference_mode():
            return self.model(torch.from_numpy(tokens).to(device)[None], ragged=batch)[0].float()

    graph_tokens = out[0][:n]
    # The graph's own key chunks (sized for the longest sequence the cache holds): the same
    # sums in the same order, so the same tokens unless the replay itself is wrong.
    stats["differ_same_chunks"] += int(
        (eager(self.max_seq_length).argmax(-1) != graph_tokens).sum()
    )
    logits = eager(int(positions.max()) + 1)  # the chunks an eager decode uses
    top2 = logits.topk(2, dim=-1).values
    index = torch.arange(n, device=device)
    differ = graph_tokens != logits.argmax(-1)
    stats["decodes"] += n
    stats["differ"] += int(differ.sum())
    gap = logits[index, logits.argmax(-1)] - logits[index, graph_tokens]
    stats["worst_gap"] = max(stats["worst_gap"], float(gap.max()))
    stats["median_top2_gap"].append(float((top2[:, 0] - top2[:, 1]).median()))
    return graph_tokens


stats = {"decodes": 0, "differ": 0, "differ_same_chunks": 0, "worst_gap": 0.0,
         "median_top2_gap": []}  # fmt: skip


def report() -> None:
    gaps = sorted(stats.pop("median_top2_gap")) or [0.0]
    print({**stats, "median_of_median_top2_gap": gaps[len(gaps) // 2]}, flush=True)


atexit.register(report)
serving_graphs.PagedDecodeGraphs._capture = capture
serving_graphs.PagedDecodeGraphs.run = run
sys.argv = ["diagnose.py", *sys.argv[1:]]
runpy.run_path("studies/serving-validation/diagnose.py", run_name="__main__")
