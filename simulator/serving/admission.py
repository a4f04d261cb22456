"""Whose rules admit a request: the serving engines' admission and preemption policies.

The same knobs (``max_num_seqs``, the token budget, the KV blocks) admit different batches on
different engines, because each engine decides differently how much of the KV cache a request
must find free before it starts. The scheduler (``scheduler.py``) is one mechanism; a policy
only answers two questions: how many blocks must stay free for the running requests' future
output (``reserved_blocks``), and how many a new request must find on top of its prompt's
(``future_blocks``). A request's future output is what it still has to generate: its
``max_tokens``, which a benchmark sets to the output length it wants, so here the request's own
output length.

- ``vllm`` (v1, and the default): a request is admitted when its prompt's blocks are free; when
  a running request needs a block and none is left, the newest is preempted and later recomputes
  (``vllm/v1/core/sched/scheduler.py``, ``Scheduler.schedule``). Nothing is reserved.
- ``trtllm-no-evict`` (TensorRT-LLM's default capacity-scheduler policy, ``GUARANTEED_NO_EVICT``):
  a request is admitted only when the blocks of its whole sequence (prompt plus every output
  token) are free after the running requests' remaining blocks are set aside, so nothing is ever
  evicted. Reserved: every running request's blocks to completion, ``ceil((prompt + output) /
  block)`` less what it holds (``GuaranteedNoEvictScheduler`` in
  ``cpp/tensorrt_llm/batch_manager/capacityScheduler.cpp``, ``KVCacheManager::
  getRemainingBlocksToCompletion``; the PyTorch backend's ``GuaranteedNoEvictPolicy``).
- ``trtllm-max-utilization`` (``MAX_UTILIZATION``): admit while the next step's blocks fit and
  pause the last started request when blocks run out; it recomputes (``LlmRequest::pause``), as
  vLLM's preempted requests do.
- ``sglang``: an iteration is a prefill batch whenever one can be formed, else a decode batch
  (``Scheduler.get_next_batch_to_run``; ``--enable-mixed-chunk`` is off by default). The
  running requests' remaining output counts at ``new_token_ratio`` of its size
  and a new request's at its whole (clipped) size. The ratio starts at 0.7, falls by a step each
  decode iteration to 0.098 (0.7 x 0.14, over 600 iterations), and jumps back up when requests
  are retracted (SGLang's preemption): to the fraction of the running requests' output already
  decoded, plus 20 steps each. Retraction takes the request that has decoded least first and
  sends it to the back of the queue. (SGLang 0.5.23: ``managers/schedule_policy.py``,
  ``PrefillAdder``; ``managers/scheduler_components/new_token_ratio_tracker.py``;
  ``managers/schedule_batch.py``, ``retract_decode``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..data.policies import Admission

__all__ = ["AdmissionPolicy", "policy_for"]

# SGLang's defaults (SGLANG_INIT_NEW_TOKEN_RATIO, SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR,
# SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS, SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION,
# SGLANG_RETRACT_DECODE_STEPS); --schedule-conservativeness 1.0 multiplies the first.
SGLANG_INIT_RATIO = 0.7
SGLANG_MIN_RATIO_FACTOR = 0.14
SGLANG_DECAY_STEPS = 600
SGLANG_CLIP_OUTPUT = 4096
SGLANG_RETRACT_STEPS = 20


def _blocks(tokens: int, block: int) -> int:
    return -(-tokens // block)


@dataclass
class AdmissionPolicy:
    """One replica's admission rule and its state (SGLang's ratio moves as the engine runs).

    ``reserve`` says what the running requests' future output holds back: ``"none"`` (vLLM),
    ``"completion"`` (every block up to prompt + output, TensorRT-LLM's no-evict) or ``"ratio"``
    (``ratio`` of the remaining output tokens, SGLang)."""

    name: Admission
    reserve: Literal["none", "completion", "ratio"] = "none"
    ratio: float = 0.0
    ratio_start: float = 0.0  # where it starts again when the engine runs empty
    ratio_min: float = 0.0
    decay: float = 0.0  # per decode iteration
    retract_to_back: bool = False  # a preempted request rejoins the queue at its end (SGLang)
    # Prefill chunks and decodes in one iteration (vLLM, TensorRT-LLM), or, as SGLang does by
    # default (no --enable-mixed-chunk), a prefill batch whenever one can be formed, the
    # running decodes waiting for it.
    mixed: bool = True

    @property
    def reserves(self) -> bool:
        return self.reserve != "none"

    def reserved_blocks(self, *, to_completion: int, tokens_left: int, block: int) -> int:
        """Free blocks kept for the running requests: ``to_completion`` is the blocks they still
        open up to prompt + output, ``tokens_left`` the output tokens they still produce."""
        if self.reserve == "completion":
            return to_completion
        if self.reserve == "ratio":
            return _blocks(int(self.ratio * tokens_left), block)
        return 0

    def future_blocks(self, *, computed: int, prompt: int, output: int, block: int) -> int:
        """Blocks a new request (``computed`` tokens to prefill now) must find free beyond
        those of what it prefills: TensorRT-LLM wants its whole sequence, SGLang counts its whole
        remaining output (clipped), not the ratio."""
        if self.reserve == "completion":
            return _blocks(prompt + output, block) - _blocks(computed, block)
        if self.reserve == "ratio":
            return _blocks(min(prompt + output - computed, SGLANG_CLIP_OUTPUT), block)
        return 0

    def iterations(self, k: int) -> None:
        """``k`` decode iterations ran: SGLang's ratio decays toward its floor."""
        if self.decay:
            self.ratio = max(self.ratio - self.decay * k, self.ratio_min)

    def idle(self) -> None:
        """The engine ran empty: SGLang starts its ratio over."""
        if self.decay:
            self.ratio = self.ratio_start

    def retracted(self, *, decoded: int, output: int, running: int) -> None:
        """Requests were preempted: SGLang re-estimates its ratio from what the ``running``
        requests have decoded of their ``output``, plus ``SGLANG_RETRACT_STEPS`` more each."""
        if self.decay:
            self.ratio = min(1.0, (decoded + SGLANG_RETRACT_STEPS * running) / (output + 1))


def policy_for(name: Admission) -> AdmissionPolicy:
    """A fresh policy (one per replica: SGLang's ratio is per scheduler)."""
    if name == "trtllm-no-evict":
        return AdmissionPolicy(name, reserve="completion")
    if name == "sglang":
        floor = SGLANG_INIT_RATIO * SGLANG_MIN_RATIO_FACTOR
        return AdmissionPolicy(
            name,
            reserve="ratio",
            ratio=SGLANG_INIT_RATIO,
            ratio_start=SGLANG_INIT_RATIO,
            ratio_min=floor,
            decay=(SGLANG_INIT_RATIO - floor) / SGLANG_DECAY_STEPS,
            retract_to_back=True,
            mixed=False,
        )
    return AdmissionPolicy(name)  # vllm, trtllm-max-utilization: nothing reserved
