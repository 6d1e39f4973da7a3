"""Continuous batching: many requests decoded together in one llama.cpp batch, one slot each.

One background thread owns a multi-sequence llama.cpp context. Each step it admits queued requests
into free slots, puts every running slot's next token (and chunks of new prompts) into one batch,
decodes it once and samples each slot from its own output row. A finished or cancelled request
frees its slot at once. Results reach callers through thread-safe or asyncio-friendly handles.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmkit.engines.base import reusable_prefix
from llmkit.errors import ContextOverflowError, InvalidParameterError, LlmkitError
from llmkit.generation.loop import AnswerBuilder, GenerationChunk, GenerationResult, Timing, Usage
from llmkit.params import SamplingParams


class QueueFullError(LlmkitError):
    """Every slot is busy and the waiting line is at its bound; try again shortly."""


class SchedulerClosedError(LlmkitError):
    """The scheduler was shut down before the request finished."""


@dataclass
class BatchRequest:
    """What a caller asks for: prompt tokens, sampling parameters and an optional GBNF grammar."""

    prompt_ids: list[int]
    params: SamplingParams
    grammar: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


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
        # Tokens whose keys and values this sequence holds. They outlive the request, so the next
        # one with the same beginning (a chat's earlier turns, a shared system prompt) skips them.
        self.cached: list[int] = []

    def start(
        self,
        handle: RequestHandle,
        sampler: Any,
        max_new_tokens: int,
        token_bytes: Callable[[int], bytes],
        stop_token_ids: frozenset[int],
        reused: int,
    ) -> None:
        request = handle.request
        self.handle, self.sampler = handle, sampler
        self.reused = reused
        del self.cached[reused:]
        self.pending = list(request.prompt_ids[reused:])  # prompt tokens not yet evaluated
        self.position = reused
        self.next_token: int | None = None  # sampled, to be fed in the next batch
        self.output_index = -1  # this slot's row in the current batch's logits, or -1
        self.answer = AnswerBuilder(token_bytes, request.params, stop_token_ids, max_new_tokens)
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

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
        threads: int | None = None,
    ) -> None:
        engine = model.engine
        if getattr(engine, "name", None) != "llamacpp":
            raise InvalidParameterError(
                "Batched serving needs the llama.cpp engine (a GGUF model)."
            )
        if not 1 <= parallel <= 64:
            raise InvalidParameterError("--parallel must be between 1 and 64.")
        if max_queue < 0:
            raise InvalidParameterError("The queue bound must not be negative.")
        llama = self.llama = engine.llama
        self.model, self.engine = model, engine
        self.parallel, self.max_queue = parallel, max_queue
        self.slot_context = slot_context or engine.context_length
        if self.slot_context < 16:
            raise InvalidParameterError("The context of each slot must be at least 16 tokens.")

        params = llama.llama_context_default_params()
        # Every slot gets a full window of its own (the cache is split evenly between sequences).
        params.n_ctx = self.slot_context * parallel
        params.n_seq_max = parallel
        params.kv_unified = False
        params.n_batch = params.n_ubatch = batch_size
        params.n_threads = params.n_threads_batch = threads or llama.llama_n_threads(engine.context)
        params.no_perf = True
        self.context = llama.llama_init_from_model(engine.model, params)
        if not self.context:
            raise ContextOverflowError(
                f"llama.cpp could not create a {parallel}-slot context of {self.slot_context:,} "
                "tokens each; choose a smaller --context or --parallel."
            )
        engine.apply_adapter(self.context)  # a fine-tune stored as a LoRA adapter runs here too
        self.memory = llama.llama_get_memory(self.context)
        self.batch_size = batch_size
        self.batch = llama.llama_batch_init(batch_size, 0, 1)
        self.stop_token_ids = frozenset(model.stop_token_ids)
        self.slots = [_Slot(index) for index in range(parallel)]
        self.stats = SchedulerStats()
        self._waiting: collections.deque[RequestHandle] = collections.deque()
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
        handle = RequestHandle(request, loop)
        with self._wakeup:
            if self._closed:
                raise SchedulerClosedError("The server is shutting down.")
            free = self.parallel - self.busy_slots
            if len(self._waiting) >= self.max_queue + max(free, 0):
                raise QueueFullError(
                    f"All {self.parallel} slots are busy and {len(self._waiting)} requests are "
                    "waiting; try again shortly."
                )
            self._waiting.append(handle)
            self.stats.requests_total += 1
            self._wakeup.notify()
        return handle

    def close(self) -> None:
        """Stop the thread, fail what is still queued or running, and free the context."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            return  # a decode is stuck; leaking the context beats freeing it under llama.cpp's feet
        for handle in [*self._waiting, *(slot.handle for slot in self.slots if slot.handle)]:
            handle._push(SchedulerClosedError("The server shut down before the answer finished."))
        self._waiting.clear()
        if getattr(self, "context", None):
            self.llama.llama_batch_free(self.batch)
            self.llama.llama_free(self.context)
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
                if not self._waiting:
                    return
                handle = self._waiting.popleft()
            request = handle.request
            if request.cancel.is_set():
                self._finish_unstarted(handle, "cancelled")
                continue
            try:
                from llmkit.engines.llamacpp import LlamaCppSampler

                sampler = LlamaCppSampler(
                    self.engine,
                    request.params,
                    request.prompt_ids,
                    context=self.context,
                    grammar=request.grammar,
                )
            except LlmkitError as error:
                handle._push(error)
                continue
            room = self.room_for(request.prompt_ids)
            max_new = min(request.params.max_tokens or room, room)
            # The free slot whose cached tokens share the longest beginning with this prompt.
            slot = max(free, key=lambda s: reusable_prefix(s.cached, request.prompt_ids))
            reused = reusable_prefix(slot.cached, request.prompt_ids)
            self.llama.llama_memory_seq_rm(self.memory, slot.seq_id, reused, -1)
            slot.start(
                handle, sampler, max_new, self.engine.token_bytes, self.stop_token_ids, reused
            )

    def _drop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.busy and slot.handle.request.cancel.is_set():
                self._finish(slot, "cancelled")

    def _step(self) -> None:
        llama, batch = self.llama, self.batch
        count = 0

        def add(slot: _Slot, token: int, wants_logits: bool) -> None:
            nonlocal count
            batch.token[count] = token
            batch.pos[count] = slot.position
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = slot.seq_id
            batch.logits[count] = wants_logits
            if wants_logits:
                slot.output_index = count
            slot.cached.append(token)
            slot.position += 1
            count += 1

        active = [slot for slot in self.slots if slot.busy]
        for slot in active:
            slot.output_index = -1
        # Running slots first, one token each, so a long new prompt never stalls their streams.
        for slot in active:
            if slot.next_token is not None:
                add(slot, slot.next_token, True)
                slot.next_token = None
        for slot in active:
            if slot.pending and count < self.batch_size:
                chunk = slot.pending[: self.batch_size - count]
                slot.pending = slot.pending[len(chunk) :]
                for offset, token in enumerate(chunk):
                    add(slot, token, not slot.pending and offset == len(chunk) - 1)
        if count == 0:
            return
        batch.n_tokens = count
        status = llama.llama_decode(self.context, batch)
        if status != 0:
            raise ContextOverflowError(f"llama.cpp could not evaluate the batch (status {status}).")
        self.stats.steps_total += 1
        generated = 0
        for slot in active:
            if slot.output_index >= 0:
                self._accept(slot, slot.sampler.sample(slot.output_index))
                generated += 1
        self.stats.recent_steps.append((time.perf_counter(), generated))

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
        # A finished grammar allows only end-of-generation tokens, whichever the model picks.
        is_stop = handle.request.grammar is not None and self.llama.llama_vocab_is_eog(
            self.engine.vocab, token
        )
        chunk = slot.answer.add(token, is_stop=is_stop)
        if chunk is not None:
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
        self.stats.prompt_tokens_total += prompt_tokens - slot.reused - len(slot.pending)
        self.stats.completion_tokens_total += len(answer.tokens)
        self.stats.requests_finished[reason] += 1
        # Free the slot before telling the caller, so a follow-up request finds it free. Its cache
        # stays, for a next request that begins the same way.
        slot.handle = slot.sampler = None
        handle._push(last)

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
            if slot.busy:
                handle = slot.handle
                slot.handle = slot.sampler = None
                self.stats.requests_finished["error"] += 1
                handle._push(message)
        self.llama.llama_memory_clear(self.memory, True)
        for slot in self.slots:
            slot.cached = []

    def __del__(self) -> None:
        if getattr(self, "context", None) and not self._thread.is_alive():
            self.llama.llama_batch_free(self.batch)
            self.llama.llama_free(self.context)
            self.context = None
