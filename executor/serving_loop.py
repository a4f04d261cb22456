"""The serving loop on the GPU: the simulator's scheduler decides, the model runs, the clock is
measured.

``ServingExecutor`` is the external clock of ``simulator.serving.simulate(..., clock=)``. The
simulator's own scheduler (token budget, ``max_num_seqs``, chunked prefill, KV-block admission,
preemption) decides each iteration as it does for a prediction, hands it over as an
``Iteration``, and advances its clock by what this returns: the iteration run on the model
(``executor.ragged``: decodes and prompt chunks in one batch, K/V in a paged cache), greedy
sampling included, and synchronized, plus the loop's own host time since the last one (the
scheduling and bookkeeping a serving engine spends between iterations). A predicted run and a
measured run therefore differ only in step times and host overhead, never in scheduling.

Time is virtual: requests arrive at their workload times on the clock the measured iterations
build, and an idle engine jumps to the next arrival instead of sleeping (the latencies are the
same as if it had waited). Every iteration is logged (``records``) with its measured and
predicted time and the host share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from executor import jit_compiles
from executor.block_tables import BlockTables
from executor.piecewise_graphs import PiecewiseGraphs
from executor.ragged import RaggedBatch, chunks_alone, setup_paged_caches, to_device
from executor.serving_graphs import PagedDecodeGraphs, check_inputs
from executor.serving_warmup import Step, paged_attentions, warm_up
from executor.speculative import DraftModel
from executor.speculative_graphs import ProposeGraphs, RoundGraphs

__all__ = ["ServingExecutor", "IterationRecord", "Step"]


@dataclass
class IterationRecord:
    """One measured iteration: tokens run, decodes, chunks; seconds."""

    tokens: int
    decodes: int
    chunks: int
    predicted_s: float
    step_s: float  # inputs, the model, sampling, synchronized
    host_s: float  # the loop between the previous iteration and this one
    device_s: float | None = None  # from the first kernel to the sampled tokens (on a GPU)
    emitting: int = 0  # tokens sampled for requests (decodes, prompts completed)
    # "graph": a decode graph's replay; "piecewise": everything but attention from graphs
    # (an iteration with prompt chunks); "eager": all from Python.
    path: str = "eager"
    compiles: int = 0  # Triton compiles inside it (``executor.jit_compiles``): none, once warm
    compiled: tuple[str, ...] = ()  # the kernels those compiles were
    # The host's time to issue the iteration (its inputs and every launch) before it waits for
    # the GPU: near ``step_s``, the host set the pace and the GPU idled between kernels.
    issued_s: float | None = None

    @property
    def overhead_s(self) -> float | None:
        """Time outside the GPU's run of the model: inputs, the host's copy of the sampled
        tokens, the loop between iterations (the simulator's host-overhead terms)."""
        return None if self.device_s is None else self.measured_s - self.device_s

    @property
    def measured_s(self) -> float:
        return self.step_s + self.host_s


class ServingExecutor:
    """Runs the simulator's iterations on ``model`` (paged K/V of ``num_blocks`` blocks of
    ``block_size`` tokens). Call it with an ``Iteration``; it returns the measured seconds.
    Sampling is greedy, and a decode's input is its request's last sampled token."""

    def __init__(self, model, *, num_blocks: int, block_size: int, max_seq_length: int,
                 kv_dtype: torch.dtype | None = None, kv_scale: float = 1.0, seed: int = 0,
                 synchronize: Callable[[], None] | None = None,
                 prompt_tokens: Callable[[int, int, int], list[int]] | None = None,
                 graphs_up_to: int = 0, piecewise_up_to: int = 0, token_budget: int = 0,
                 drafter=None) -> None:  # fmt: skip
        # One more block than the scheduler's: the scratch block padding rows write into.
        setup_paged_caches(model, num_blocks=num_blocks + 1, block_size=block_size,
                           kv_dtype=kv_dtype, kv_scale=kv_scale,
                           max_seq_length=max_seq_length)  # fmt: skip
        self.model, self.block_size = model, block_size
        self.device = model.embed_tokens.weight.device
        self.vocab = model.spec.vocab_size
        self.max_seq_length = max_seq_length
        # The most tokens one iteration may hold (max_num_batched_tokens): the warm-up runs it.
        self.token_budget = token_budget
        width = -(-max_seq_length // block_size)
        self.blocks = BlockTables(num_blocks, block_size, width, scratch=num_blocks)
        # Speculative decoding: a drafter (``executor.speculative``) and g + 1 tokens a verify.
        self.drafter = drafter
        self.query = 1 if drafter is None else drafter.g + 1
        if drafter is not None:
            drafter.attach(self)
        # Decode-only iterations (speculative rounds with a drafter) from CUDA graphs of up to
        # ``graphs_up_to`` sequences (the configuration's max_num_seqs), where the paged decode
        # kernel runs (a GPU with Triton).
        self.graphs: PagedDecodeGraphs | RoundGraphs | None = None
        self.proposals: ProposeGraphs | None = None  # a round with prompt chunks: its drafts
        cache = model.layers[0].attention.kv_cache
        if graphs_up_to and self.device.type == "cuda" and model.kernels.paged_decode(cache):
            for attention in paged_attentions(model, drafter):  # counters, before capture
                paged = attention.kv_cache
                paged.ensure_counters(graphs_up_to * paged.k.shape[1])
            if drafter is None:
                self.graphs = PagedDecodeGraphs(
                    model, max_batch=graphs_up_to, table_width=width,
                    max_seq_length=max_seq_length, scratch_block=num_blocks,
                )  # fmt: skip
            else:
                self.graphs = RoundGraphs(self, max_batch=graphs_up_to)
                self.proposals = ProposeGraphs(self, max_batch=graphs_up_to)
        # Iterations with prompt chunks of up to ``piecewise_up_to`` tokens (the token budget):
        # everything but attention from graphs, where decode graphs run, for a model alone on
        # its GPU (an EAGLE head's states included; a draft model's prefill from its own).
        self.piecewise: PiecewiseGraphs | None = None
        if self.graphs is not None and piecewise_up_to and model.collectives is None:
            self.piecewise = PiecewiseGraphs(model, max_tokens=piecewise_up_to,
                                             scratch_block=self.blocks.scratch,
                                             keep_hidden=getattr(drafter, "wants_hidden", False))  # fmt: skip
            if isinstance(drafter, DraftModel):
                drafter.pieces = PiecewiseGraphs(drafter.model, max_tokens=piecewise_up_to,
                                                 scratch_block=self.blocks.scratch)  # fmt: skip
        generator = torch.Generator(device="cpu").manual_seed(seed)
        # Prompt token ids (request, first position, count): random unless given (a test's).
        self.prompt_tokens = prompt_tokens or (
            lambda rid, start, length: torch.randint(
                self.vocab, (length,), generator=generator
            ).tolist()
        )
        if synchronize is None:
            synchronize = torch.cuda.synchronize if self.device.type == "cuda" else lambda: None
        self.synchronize = synchronize
        self.records: list[IterationRecord] = []
        self.notes: list[str] = []  # what the run could not do as configured, said in its report
        self._returned: float | None = None
        self._retries_from = _allocator_retries(self.device)
        jit_compiles.install()

    def __call__(self, iteration) -> float:
        entered, compiled = time.perf_counter(), jit_compiles.count()
        host = 0.0 if self._returned is None else entered - self._returned
        for rid in iteration.released:  # finished or preempted: their blocks are free
            self.blocks.release(rid)
        decode, graphs = iteration.decode, self.graphs
        speculative = self.drafter is not None and bool(decode)
        graphed = (graphs is not None and bool(decode) and not iteration.prefill
                   and graphs.holds(len(decode)))  # fmt: skip
        path = "graph" if graphed else "eager"
        if graphed and speculative:
            run, tokens, chunks = self._graph_round(decode), len(decode) * self.query, 0
        elif graphed:
            run, tokens, chunks = self._graph_decode(decode), len(decode), 0
        else:
            batch, token_ids = self._batch(iteration)
            tokens, chunks = int(token_ids.shape[1]), len(batch.chunks)
            target, path = self._target(token_ids, batch)
            if self.drafter is not None:
                run = self._speculative_run(iteration, batch, token_ids, target)
            else:

                def run() -> torch.Tensor:
                    with torch.inference_mode():
                        return target()

        # The GPU's share: from the model's first kernel to the sampled tokens (on a GPU).
        events = (
            [torch.cuda.Event(enable_timing=True) for _ in range(2)]
            if self.device.type == "cuda"
            else None
        )
        if events:
            events[0].record()
        next_tokens = run()
        if events:
            events[1].record()
        issued = time.perf_counter()
        sampled = next_tokens.tolist()  # to the host, as an engine needs them
        self.synchronize()
        if speculative:
            self._keep(iteration, sampled)
        else:
            self.blocks.last[self._sampled_rows] = sampled
        done = time.perf_counter()
        self.records.append(IterationRecord(
            tokens=tokens, decodes=len(decode), chunks=chunks,
            predicted_s=iteration.predicted_s, step_s=done - entered, host_s=host,
            device_s=events[0].elapsed_time(events[1]) * 1e-3 if events else None,
            emitting=getattr(iteration, "emitting", 0), path=path,
            compiles=jit_compiles.count() - compiled, compiled=jit_compiles.since(compiled),
            issued_s=issued - entered,
        ))  # fmt: skip
        self._returned = time.perf_counter()
        return self._agreed(self.records[-1].measured_s)

    def _agreed(self, seconds: float) -> float:
        """Under tensor parallelism every rank runs its own copy of the scheduler: each must see
        the same clock, the slowest rank's (the iteration ends when the last shard does)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return seconds
        value = torch.tensor([seconds], dtype=torch.float64, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value.item())

    def reset(self) -> None:
        """Ready for another run on the same cache and graphs: every request released, the
        log and the host clock cleared."""
        for rid in list(self.blocks.row_of):
            self.blocks.release(rid)
        self.records = []
        self._returned = None
        self._retries_from = _allocator_retries(self.device)

    def allocator_retries(self) -> int:
        """Times since the last reset that PyTorch's caching allocator found no free block,
        released its whole cache (synchronizing the device) and asked the driver again: a GPU
        too full beside the KV cache, and a slow iteration each time."""
        return _allocator_retries(self.device) - self._retries_from

    def warm_up(self) -> None:
        """Compile and capture before the timed run (``executor.serving_warmup``). Leaves no
        trace."""
        warm_up(self)

    # What tests and reports read: each request's cached length, blocks and last token.
    @property
    def lengths(self) -> dict[int, int]:
        return {rid: int(self.blocks.length[row]) for rid, row in self.blocks.row_of.items()}

    @property
    def tables(self) -> dict[int, list[int]]:
        return {rid: self.blocks.blocks_of(rid) for rid in self.blocks.row_of}

    @property
    def last_token(self) -> dict[int, int]:
        return {rid: int(self.blocks.last[row]) for rid, row in self.blocks.row_of.items()}

    @property
    def free(self) -> list[int]:
        return self.blocks.free

    def _decodes(self, decode: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The decodes' rows and positions (their cached lengths), each given a block where
        its new token starts one. A verify's ``query`` tokens get blocks for all of them; its
        lengths move once the kept tokens are known (``_keep``)."""
        blocks, query = self.blocks, self.query
        rows = blocks.rows(decode)
        positions = blocks.length[rows].copy()
        if query == 1:
            blocks.length[rows] += 1
            for row in rows[positions % self.block_size == 0].tolist():
                blocks.reserve(row, int(blocks.length[row]))
            return rows, positions
        short = -(-(positions + query) // self.block_size) > blocks.count[rows]
        for row, position in zip(rows[short].tolist(), positions[short].tolist(), strict=True):
            blocks.reserve(row, position + query)
        return rows, positions

    def _graph_decode(self, decode: list[int]) -> Callable[[], torch.Tensor]:
        """The inputs of a decode-only iteration; returns the replay of its bucket's graph."""
        rows, positions = self._decodes(decode)
        self._sampled_rows = rows
        graphs, blocks = self.graphs, self.blocks
        assert graphs is not None
        tokens, tables = blocks.last[rows], blocks.table[rows, : int(blocks.count[rows].max())]
        return lambda: graphs.run(tokens, positions, tables)

    def _graph_round(self, decode: list[int]) -> Callable[[], torch.Tensor]:
        """The inputs of a speculative round with no prompt chunk; returns its replay."""
        rows, first = self._decodes(decode)
        self._sampled_rows = rows
        graphs, blocks = self.graphs, self.blocks
        assert isinstance(graphs, RoundGraphs)
        last, tables = blocks.last[rows], blocks.table[rows, : int(blocks.count[rows].max())]
        rows_t = torch.from_numpy(rows).to(self.device)

        def run() -> torch.Tensor:
            with torch.inference_mode():
                tokens, self._verify, self._verify_hidden = graphs.run(rows_t, last, first, tables)
            return tokens

        return run

    def _batch(self, iteration) -> tuple[RaggedBatch, torch.Tensor]:
        """The iteration's ``RaggedBatch`` and token ids ``[1, N]``: decodes first (each at
        its cached length), then each prompt chunk; blocks taken as the tokens need them."""
        blocks, size = self.blocks, self.block_size
        query = self.query if iteration.decode else 1
        rows, positions = self._decodes(iteration.decode)
        # A decode is its last token; a verify, that and room for the drafts (filled on the GPU).
        last, owner = blocks.last[rows], np.arange(len(rows))  # owner: each token's table row
        if query > 1:
            last = np.pad(last[:, None], ((0, 0), (0, query - 1))).reshape(-1)
            owner = np.repeat(owner, query)
            positions = (positions[:, None] + np.arange(query)[None, :]).reshape(-1)
        tokens, owners, positions = [last], [owner], [positions]
        chunks, sample = [], list(range(len(rows) * query))
        first, chunk_rows = len(rows) * query, []
        for rid, start, length in iteration.prefill:
            if start == 0:  # a prompt from the start (again, after a preemption)
                blocks.release(rid)
            row = blocks.row(rid)
            blocks.length[row] = start + length
            blocks.reserve(row, start + length)
            positions.append(np.arange(start, start + length))
            tokens.append(np.asarray(self.prompt_tokens(rid, start, length), dtype=np.int64))
            owners.append(np.full(length, len(rows) + len(chunk_rows)))
            chunks.append((first, length, len(rows) + len(chunk_rows), start))
            sample.append(first + length - 1)  # its next token (kept when the prompt is done)
            first += length
            chunk_rows.append(row)
        batch_rows = np.concatenate([rows, np.asarray(chunk_rows, dtype=np.int64)])
        self._sampled_rows = batch_rows
        widest = int(blocks.count[batch_rows].max())
        tables = blocks.table[batch_rows, :widest]
        position = np.concatenate(positions)
        owner = np.concatenate(owners)
        token_ids = np.concatenate(tokens)
        check_inputs(token_ids, position, self.vocab, self.max_seq_length)
        at, slots, offsets, table, sampled, ids = to_device(
            self.device, position, tables[owner, position // size], position % size, tables,
            np.asarray(sample), token_ids,
        )  # fmt: skip
        batch = RaggedBatch(
            positions=at, blocks=slots, offsets=offsets, tables=table.view(tables.shape),
            decodes=len(rows), chunks=chunks, sample_rows=sampled,
            max_length=int(blocks.length[batch_rows].max()) + query - 1, query=query,
            keep_hidden=getattr(self.drafter, "wants_hidden", False),
        )  # fmt: skip
        return batch, ids[None]

    def _target(self, token_ids: torch.Tensor, batch: RaggedBatch):
        """(The target model's greedy tokens at ``batch``'s sampled rows, the path): from the
        piecewise graphs where the iteration fits a bucket, else eagerly."""
        piecewise = self.piecewise
        if piecewise is not None and piecewise.holds(token_ids.shape[1]):
            return lambda: piecewise.run(token_ids, batch), "piecewise"
        return lambda: self.model(token_ids, ragged=batch)[0].argmax(dim=-1), "eager"

    def _speculative_run(self, iteration, batch: RaggedBatch, token_ids: torch.Tensor,
                         target: Callable[[], torch.Tensor]):  # fmt: skip
        """A round: the drafter prefills the prompt chunks and proposes ``g`` tokens for each
        decode, on the GPU, into the verify's inputs; then the target runs the whole batch."""
        drafter, n, query = self.drafter, len(iteration.decode), self.query
        rows = torch.from_numpy(self._sampled_rows[:n]).to(self.device)
        proposals = self.proposals  # the drafts from a graph, where one holds the decodes
        proposals = proposals if proposals is not None and proposals.holds(n) else None

        def run() -> torch.Tensor:
            with torch.inference_mode():
                verify = token_ids[0, : n * query].view(n, query)
                if n:  # the batch's own positions and tables, already on the GPU
                    inputs = (drafter.tail_of(rows), verify[:, 0],
                              batch.positions[: n * query : query], batch.tables[:n])  # fmt: skip
                    verify[:, 1:] = (proposals.run(*inputs) if proposals is not None
                                     else drafter.propose(*inputs, batch.max_length))  # fmt: skip
                out = target()
                hidden = self.model.hidden if batch.keep_hidden else None
                if batch.chunks:  # the draft's own prefill of the same prompt tokens
                    chunk_batch, chunk_ids = chunks_alone(batch, token_ids)
                    chunk_hidden = None if hidden is None else hidden[n * query :]
                    drafter.prefill(chunk_batch, chunk_ids, self._sampled_rows[n:], chunk_hidden)
                self._verify, self._verify_hidden = verify, hidden
                return out

        return run

    def _keep(self, iteration, sampled: list[int]) -> None:
        """After a round: each decode keeps its accepted drafts and the target's token after
        them (its new last token); chunks keep their sampled token as usual."""
        n, query, blocks = len(iteration.decode), self.query, self.blocks
        rows = self._sampled_rows
        kept = np.asarray(iteration.accepted or [0] * n, dtype=np.int64) + 1
        target = np.asarray(sampled[: n * query], dtype=np.int64).reshape(n, query)
        blocks.last[rows[:n]] = target[np.arange(n), kept - 1]
        blocks.length[rows[:n]] += kept
        blocks.last[rows[n:]] = sampled[n * query :]
        hidden = self._verify_hidden
        states = None if hidden is None else hidden[: n * query].view(n, query, -1)
        with torch.inference_mode():
            self.drafter.kept(rows[:n], self._verify, torch.from_numpy(kept).to(self.device),
                              states)  # fmt: skip


def _allocator_retries(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return int(torch.cuda.memory_stats(device).get("num_alloc_retries", 0))
