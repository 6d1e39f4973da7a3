"""Continuous batching: many requests decoded together in one batch, one slot (sequence) each.

One background thread owns a multi-sequence context of any engine. Each step it admits queued
requests into free slots, puts every running slot's next token (and chunks of new prompts) into one
decode call and samples each slot from its own output row. A finished or cancelled request frees
its slot at once. Results reach callers through thread-safe or asyncio-friendly handles.

A request for n choices (`submit_choices`) takes n slots at once: one reads the prompt, its cache
is copied to the others (`Context.copy_sequence`), and all n sample their first token from the
prompt's last row, each with its own sampler (seeds seed, seed+1, ... when a seed is given), then
decode side by side as independent sequences.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmkit.engines.base import BatchItem, Context, Sampler, TokenConstraint, reusable_prefix
from llmkit.errors import ContextOverflowError, InvalidParameterError, LlmkitError
from llmkit.generation.logprobs import TokenLogprob, token_logprob, unscored
from llmkit.generation.loop import AnswerBuilder, GenerationChunk, GenerationResult, Timing, Usage
from llmkit.params import MAX_SEED, SamplingParams


class QueueFullError(LlmkitError):
    """Every slot is busy and the waiting line is at its bound; try again shortly."""


class SchedulerClosedError(LlmkitError):
    """The scheduler was shut down before the request finished."""


@dataclass
class BatchRequest:
    """What a caller asks for: prompt tokens, sampling parameters and an optional constraint.

    `constraint` makes a fresh TokenConstraint (a compiled grammar) when the request is admitted;
    an error it raises (say, a grammar that does not compile) goes to the caller.
    """

    prompt_ids: list[int]
    params: SamplingParams
    constraint: Callable[[], TokenConstraint] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    # None: no log-probabilities; N: each token's, with its N most likely alternatives.
    logprobs: int | None = None
    # The prompt's own tokens' log-probabilities too (each given the ones before it), with the
    # same N alternatives: what evaluation harnesses score answers by. The prompt is then read
    # whole, without reusing a cached beginning, since a cached token has no logits.
    prompt_logprobs: bool = False


class RequestHandle:
    """The caller's end of a request: iterate (sync or async) for chunks, then read `.result`.

    Items are GenerationChunk objects; the last chunk carries the finish_reason. An error inside
    the scheduler is raised from the iteration.
    """

    def __init__(self, request: BatchRequest, loop: asyncio.AbstractEventLoop | None) -> None:
        self.request = request
        self.result: GenerationResult | None = None
        self.submitted = time.perf_counter()
        self._loop = loop
        self._async_queue: asyncio.Queue[Any] | None = asyncio.Queue() if loop else None
        self._queue: queue.Queue[Any] = queue.Queue()

    def cancel(self) -> None:
        """Stop generating; the slot is freed before the next batch step."""
        self.request.cancel.set()

    def _push(self, item: Any) -> None:
        if self._loop is not None and self._async_queue is not None:
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody listens
                self._loop.call_soon_threadsafe(self._async_queue.put_nowait, item)
        else:
            self._queue.put(item)

    def __iter__(self) -> Iterator[GenerationChunk]:
        while True:
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        assert self._async_queue is not None, "submit() was called outside an event loop"
        while True:
            item = await self._async_queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return


@dataclass
class SchedulerStats:
    """Counters for /metrics; read without a lock (ints and floats, updated by one thread)."""

    requests_total: int = 0
    requests_finished: dict[str, int] = field(default_factory=lambda: collections.Counter())
    prompt_tokens_total: int = 0
    completion_tokens_total: int = 0
    first_token_seconds_sum: float = 0.0
    first_token_count: int = 0
    steps_total: int = 0
    recent_first_token_seconds: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=1000)
    )
    # (time, tokens generated in that step), for a tokens-per-second figure over the last seconds.
    recent_steps: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )

    def tokens_per_second(self, window: float = 10.0) -> float:
        now = time.perf_counter()
        tokens = sum(count for at, count in list(self.recent_steps) if now - at <= window)
        return tokens / window


class _Slot:
    """One sequence in the shared context, and the request that currently owns it."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.handle: RequestHandle | None = None
        self.sampler: Sampler | None = None
        self.constraint: TokenConstraint | None = None
        # n choices of one prompt: the leader reads it; followers wait for a copy of its cache.
        self.leader: _Slot | None = None
        self.followers: list[_Slot] = []

    def start(
        self,
        handle: RequestHandle,
        sampler: Sampler,
        constraint: TokenConstraint | None,
        max_new_tokens: int,
        token_bytes: Callable[[int], bytes],
        stop_token_ids: frozenset[int],
        reused: int,
    ) -> None:
        request = handle.request
        self.handle, self.sampler, self.constraint = handle, sampler, constraint
        self.reused = reused
        self.pending = list(request.prompt_ids[reused:])  # prompt tokens not yet evaluated
        self.next_token: int | None = None  # sampled, to be fed in the next batch
        self.output_row = -1  # this slot's output row in the current decode, or -1
        self.answer = AnswerBuilder(token_bytes, request.params, stop_token_ids, max_new_tokens)
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.logprobs: list[TokenLogprob] = []  # every answer token's, when asked for
        self.unsent = 0  # how many of them no chunk has carried yet
        self.prompt_logprobs: list[TokenLogprob] = []  # the prompt's tokens after the first
        self.prompt_rows: list[tuple[int, int]] = []  # (output row, the token it predicts)

    def follow(self, leader: _Slot) -> None:
        """Wait for `leader` to read the shared prompt; its cache is then copied here."""
        self.leader, self.pending = leader, []
        self.reused = len(leader.handle.request.prompt_ids) if leader.handle else 0
        leader.followers.append(self)

    def release(self) -> None:
        self.handle = self.sampler = self.constraint = self.leader = None
        self.followers = []

    @property
    def busy(self) -> bool:
        return self.handle is not None


class BatchScheduler:
    """Serve one model to many callers at once. Create, `submit()` requests, `close()` at the end."""

    def __init__(
        self,
        model: Any,
        *,
        parallel: int = 4,
        max_queue: int = 64,
        slot_context: int | None = None,
        batch_size: int = 512,
        threads: int | None = None,  # unused: the engine's own thread setting applies
    ) -> None:
        engine = model.engine
        if not 1 <= parallel <= 64:
            raise InvalidParameterError("--parallel must be between 1 and 64.")
        if max_queue < 0:
            raise InvalidParameterError("The queue bound must not be negative.")
        if batch_size < 1:
            raise InvalidParameterError("The batch size must be at least 1 token.")
        self.model, self.engine = model, engine
        self.parallel, self.max_queue = parallel, max_queue
        self.slot_context = slot_context or engine.context_length
        if self.slot_context < 16:
            raise InvalidParameterError("The context of each slot must be at least 16 tokens.")
        # Every slot gets a full window of its own. A LoRA adapter the engine carries applies here
        # too; the engine's thread setting is the one used.
        self.context: Context | None = engine.new_context(parallel, self.slot_context)
        self.batch_size = batch_size  # tokens per step, across all slots
        self.end_of_generation = engine.tokenizer_facts.end_of_generation_ids
        self.stop_token_ids = frozenset(model.stop_token_ids)
        self.slots = [_Slot(index) for index in range(parallel)]
        self.stats = SchedulerStats()
        # Each entry is one request: its choices' handles, admitted together.
        self._waiting: collections.deque[list[RequestHandle]] = collections.deque()
        # A request taken off the queue but not yet in its slot (its grammar may be compiling)
        # still counts against the bound, or a burst could slip past it in that window.
        self._admitting = 0
        self._wakeup = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llmkit-batch", daemon=True)
        self._thread.start()

    # ---- the caller's side -----------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def busy_slots(self) -> int:
        return sum(slot.busy for slot in self.slots)

    def room_for(self, prompt_ids: Sequence[int]) -> int:
        """How many tokens a slot can generate after this prompt (max_tokens is clamped to it)."""
        return self.slot_context - len(prompt_ids)

    def submit(self, request: BatchRequest) -> RequestHandle:
        """Queue a request; raises QueueFullError past the bound, ContextOverflowError when too long."""
        return self.submit_choices(request, 1)[0]

    def submit_choices(self, request: BatchRequest, n: int) -> list[RequestHandle]:
        """Queue one request for n independent answers to the same prompt, one handle each.

        The prompt is read once and its cache copied to n slots. Choice i samples with
        `seed + i` when the request has a seed, so a seeded request answers the same each time;
        each handle can be cancelled on its own. Raises InvalidParameterError when n is not
        1 to `parallel` (n slots must be free together), and what submit() raises.
        """
        if not 1 <= n <= self.parallel:
            raise InvalidParameterError(
                f"n must be between 1 and {self.parallel}, not {n}: the choices of one request "
                f"are decoded side by side, and this server decodes at most {self.parallel} "
                f"sequences at once (llmkit serve --parallel {self.parallel})."
            )
        if not request.prompt_ids:
            raise ContextOverflowError("The prompt is empty; there is nothing to continue.")
        if self.room_for(request.prompt_ids) <= 0:
            raise ContextOverflowError(
                f"The prompt is {len(request.prompt_ids):,} tokens but the context window holds "
                f"{self.slot_context:,}; shorten it."
            )
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        handles = [RequestHandle(choice, loop) for choice in _choice_requests(request, n)]
        with self._wakeup:
            if self._closed:
                raise SchedulerClosedError("The server is shutting down.")
            free = self.parallel - self.busy_slots
            if len(self._waiting) + self._admitting >= self.max_queue + max(free, 0):
                raise QueueFullError(
                    f"All {self.parallel} slots are busy and {len(self._waiting)} requests are "
                    "waiting; try again shortly."
                )
            self._waiting.append(list(handles))  # the scheduler's own list: it prunes it
            self.stats.requests_total += n
            self._wakeup.notify()
        return handles

    def close(self) -> None:
        """Stop the thread, fail what is still queued or running, and free the context."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            return  # a decode is stuck; leaking the context beats freeing it under the engine's feet
        waiting = [handle for group in self._waiting for handle in group]
        for handle in [*waiting, *(slot.handle for slot in self.slots if slot.handle)]:
            handle._push(SchedulerClosedError("The server shut down before the answer finished."))
        self._waiting.clear()
        if self.context is not None:
            self.context.close()
            self.context = None

    # ---- the scheduler thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._closed and not self._waiting and not self.busy_slots:
                    self._wakeup.wait()
                if self._closed:
                    return
            self._admit()
            self._drop_cancelled()
            if self.busy_slots:
                try:
                    self._step()
                except Exception as error:
                    self._fail_all(error)

    def _admit(self) -> None:
        while True:
            free = [slot for slot in self.slots if not slot.busy]
            if not free:
                return
            with self._wakeup:
                # First come, first served: a request for more choices than there are free
                # slots waits at the head, rather than being overtaken until it starves (its
                # cancelled choices leave at once, so a request given up holds no one back).
                while self._waiting and self._prune_cancelled(self._waiting[0]):
                    self._waiting.popleft()
                if not self._waiting or len(self._waiting[0]) > len(free):
                    return
                group = self._waiting.popleft()
                self._admitting += 1
            try:
                self._start(group, free)
            finally:
                with self._wakeup:
                    self._admitting -= 1

    def _prune_cancelled(self, group: list[RequestHandle]) -> bool:
        """End the group's cancelled choices (in place); True when none is left."""
        for handle in [h for h in group if h.request.cancel.is_set()]:
            group.remove(handle)
            self._finish_unstarted(handle, "cancelled")
        return not group

    def _start(self, group: list[RequestHandle], free: list[_Slot]) -> None:
        """Put one request into the free slot that has most of its prompt cached; its other
        choices into the free slots holding least, to follow it once it has read the prompt."""
        if self._prune_cancelled(group):
            return
        request = group[0].request
        context = self.context
        assert context is not None
        room = self.room_for(request.prompt_ids)
        max_new = min(request.params.max_tokens or room, room)
        # The free slot whose cached tokens share the longest beginning with this prompt.
        slot = max(
            free, key=lambda s: reusable_prefix(context.cached(s.seq_id), request.prompt_ids)
        )
        reused = reusable_prefix(context.cached(slot.seq_id), request.prompt_ids)
        if request.prompt_logprobs:
            reused = 0
        others = sorted(
            (s for s in free if s is not slot), key=lambda s: len(context.cached(s.seq_id))
        )
        slots = [slot, *others[: len(group) - 1]]
        try:
            made = [self._sampler_for(choice.request) for choice in group]
        except LlmkitError as error:
            for choice in group:
                choice._push(error)
            return
        for index, (choice, each, (sampler, constraint)) in enumerate(zip(group, slots, made)):
            each.start(
                choice,
                sampler,
                constraint,
                max_new,
                self.engine.token_bytes,
                self.stop_token_ids,
                reused,
            )
            if index == 0:
                context.keep_prefix(each.seq_id, reused)
            else:
                each.follow(slot)
        if request.prompt_logprobs and request.prompt_ids:
            slot.prompt_logprobs.append(unscored(request.prompt_ids[0], self.engine.token_bytes))

    def _sampler_for(self, request: BatchRequest) -> tuple[Sampler, TokenConstraint | None]:
        assert self.context is not None
        try:
            constraint = request.constraint() if request.constraint is not None else None
            return self.context.new_sampler(
                request.params, request.prompt_ids, constraint
            ), constraint
        except LlmkitError:
            raise
        except Exception as error:  # a faulty constraint must not stop the scheduler thread
            raise LlmkitError(f"The request could not start: {error}") from error

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.handle is not None and slot.handle.request.cancel.is_set():
                self._finish(slot, "cancelled")

    def _step(self) -> None:
        context = self.context
        assert context is not None
        items: list[BatchItem] = []
        room = self.batch_size
        rows = 0
        active = [slot for slot in self.slots if slot.busy]
        for slot in active:
            slot.output_row = -1
        # Running slots first, one token each, so a long new prompt never stalls their streams.
        for slot in active:
            if slot.next_token is not None:
                items.append(BatchItem(slot.seq_id, (slot.next_token,)))
                slot.next_token, slot.output_row = None, rows
                rows, room = rows + 1, room - 1
        for slot in active:
            if slot.pending and room > 0:
                chunk, slot.pending = slot.pending[:room], slot.pending[room:]
                last = not slot.pending
                room -= len(chunk)
                if self._scores_prompt(slot):
                    # A row for every token: each predicts the next prompt token; the last
                    # one (at the prompt's end) is the row the answer is sampled from.
                    following = [*chunk[1:], *slot.pending[:1]]
                    slot.prompt_rows = [(rows + i, t) for i, t in enumerate(following)]
                    items.append(BatchItem(slot.seq_id, chunk, want_logits=True, all_logits=True))
                    rows += len(chunk)
                    if last:
                        slot.output_row = rows - 1
                    continue
                items.append(BatchItem(slot.seq_id, chunk, want_logits=last))
                if last:
                    slot.output_row, rows = rows, rows + 1
        if not items:
            return
        context.decode(items)
        self.stats.steps_total += 1
        generated = 0
        vocab = self.engine.tokenizer_facts.vocab_size
        for slot in active:
            if slot.prompt_rows:
                self._score_prompt(slot, vocab)
        for slot in active:
            if slot.followers and slot.output_row >= 0 and not slot.pending:
                self._fork(slot)
        rows_read: dict[int, np.ndarray] = {}  # choices of one prompt share its last row
        for slot in active:
            if slot.output_row >= 0 and slot.sampler is not None:
                top = slot.handle.request.logprobs if slot.handle is not None else None
                # Read before sampling: a constraint masks the row in place.
                row = None
                if top is not None:
                    row = rows_read.get(slot.output_row)
                    if row is None:
                        row = np.array(context.logits(slot.output_row)[:vocab])
                        rows_read[slot.output_row] = row
                token = slot.sampler.sample(slot.output_row)
                if row is not None and top is not None:
                    slot.logprobs.append(token_logprob(row, token, top, self.engine.token_bytes))
                self._accept(slot, token)
                generated += 1
        self.stats.recent_steps.append((time.perf_counter(), generated))

    def _fork(self, leader: _Slot) -> None:
        """The leader has read the prompt: its followers get its cache and its last row."""
        assert self.context is not None
        for follower in leader.followers:
            self.context.copy_sequence(leader.seq_id, follower.seq_id)
            follower.output_row, follower.leader = leader.output_row, None
            follower.prompt_logprobs = list(leader.prompt_logprobs)
        leader.followers = []

    def _hand_over(self, leader: _Slot) -> None:
        """A leader ends before it has read the prompt (cancelled): its first follower takes
        over what it has read and the rest, and leads the others."""
        assert self.context is not None
        followers = leader.followers
        # Cancelled ones end in this same pass; one that goes on should carry the prompt.
        live = [f for f in followers if f.handle and not f.handle.request.cancel.is_set()]
        heir = (live or followers)[0]
        others = [f for f in followers if f is not heir]
        self.context.copy_sequence(leader.seq_id, heir.seq_id)
        heir.pending, heir.leader, heir.reused = list(leader.pending), None, leader.reused
        heir.prompt_logprobs = list(leader.prompt_logprobs)
        heir.followers = others
        for follower in others:
            follower.leader = heir
        leader.followers = []

    def _accept(self, slot: _Slot, token: int) -> None:
        """Handle one sampled token: stop tokens, stop strings, UTF-8 pieces, limits, cancellation."""
        handle = slot.handle
        assert handle is not None
        now = time.perf_counter()
        if slot.first_token_at is None:
            slot.first_token_at = now
            seconds = now - handle.submitted
            self.stats.first_token_seconds_sum += seconds
            self.stats.first_token_count += 1
            self.stats.recent_first_token_seconds.append(seconds)
        # Once a constraint is complete, any end-of-generation token the model picks ends it.
        constraint = slot.constraint
        is_stop = constraint is not None and token in self.end_of_generation and constraint.finished
        ends = (
            is_stop or token in slot.answer.stop_token_ids
        ) and not handle.request.params.ignore_eos
        if ends and handle.request.logprobs is not None:
            slot.logprobs.pop()  # a stop token is not part of the answer, nor are its odds
        chunk = slot.answer.add(token, is_stop=is_stop)
        if chunk is not None:
            self._attach_logprobs(slot, chunk)
            handle._push(chunk)
        if slot.answer.finish_reason is not None:
            self._finish(slot, slot.answer.finish_reason)
        elif handle.request.cancel.is_set():
            self._finish(slot, "cancelled")
        else:
            slot.next_token = token

    def _finish(self, slot: _Slot, reason: str) -> None:
        handle = slot.handle
        assert handle is not None
        if slot.leader is not None:  # a follower that never started
            slot.leader.followers.remove(slot)
        if slot.followers:
            self._hand_over(slot)
        answer = slot.answer
        last = answer.finish(reason)
        now = time.perf_counter()
        prompt_tokens = len(handle.request.prompt_ids)
        usage = Usage(prompt_tokens, len(answer.tokens), cached_prompt_tokens=slot.reused)
        timing = Timing()
        if slot.first_token_at is not None:
            timing.first_token_seconds = slot.first_token_at - handle.submitted
            timing.prompt_seconds = slot.first_token_at - slot.started
            timing.generation_seconds = now - slot.first_token_at
        handle.result = GenerationResult(
            answer.text, reason, usage, timing, list(answer.tokens), answer.stopped_by
        )
        if handle.request.logprobs is not None:
            handle.result.logprobs = list(slot.logprobs)
            self._attach_logprobs(slot, last)
        if handle.request.prompt_logprobs:
            handle.result.prompt_logprobs = list(slot.prompt_logprobs)
        self.stats.prompt_tokens_total += prompt_tokens - slot.reused - len(slot.pending)
        self.stats.completion_tokens_total += len(answer.tokens)
        self.stats.requests_finished[reason] += 1
        # Free the slot before telling the caller, so a follow-up request finds it free. Its cache
        # stays, for a next request that begins the same way.
        slot.release()
        handle._push(last)

    def _score_prompt(self, slot: _Slot, vocab: int) -> None:
        """The log-probability of each prompt token read in this step, from the row before it."""
        assert self.context is not None and slot.handle is not None
        alternatives = slot.handle.request.logprobs or 0
        for row, token in slot.prompt_rows:
            logits = np.array(self.context.logits(row)[:vocab])
            entry = token_logprob(logits, token, alternatives, self.engine.token_bytes)
            slot.prompt_logprobs.append(entry)
        slot.prompt_rows = []

    @staticmethod
    def _scores_prompt(slot: _Slot) -> bool:
        return slot.handle is not None and slot.handle.request.prompt_logprobs

    @staticmethod
    def _attach_logprobs(slot: _Slot, chunk: GenerationChunk) -> None:
        """Give the chunk the log-probabilities of the tokens since the last chunk."""
        if slot.handle is None or slot.handle.request.logprobs is None:
            return
        chunk.logprobs = slot.logprobs[slot.unsent :]
        slot.unsent = len(slot.logprobs)

    def _finish_unstarted(self, handle: RequestHandle, reason: str) -> None:
        usage = Usage(prompt_tokens=len(handle.request.prompt_ids))
        handle.result = GenerationResult("", reason, usage, Timing())
        self.stats.requests_finished[reason] += 1
        handle._push(GenerationChunk("", None, reason))

    def _fail_all(self, error: Exception) -> None:
        """A decode failed: the cache is in an unknown state, so every running request ends."""
        message = (
            error if isinstance(error, LlmkitError) else LlmkitError(f"Generation failed: {error}")
        )
        for slot in self.slots:
            handle = slot.handle
            if handle is not None:
                slot.release()
                self.stats.requests_finished["error"] += 1
                handle._push(message)
        if self.context is not None:
            for slot in self.slots:
                self.context.keep_prefix(slot.seq_id, 0)

    def __del__(self) -> None:
        context = getattr(self, "context", None)
        if context is not None and not self._thread.is_alive():
            context.close()
            self.context = None


def _choice_requests(request: BatchRequest, n: int) -> list[BatchRequest]:
    """The request once per choice: each its own cancel switch and, with a seed, seed + i."""
    if n == 1:
        return [request]
    choices = []
    for index in range(n):
        params = request.params
        if params.seed is not None:
            params = dataclasses.replace(params, seed=(params.seed + index) % (MAX_SEED + 1))
        choices.append(dataclasses.replace(request, params=params, cancel=threading.Event()))
    return choices
