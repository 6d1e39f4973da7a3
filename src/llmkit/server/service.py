"""One pipeline under both APIs: a neutral request in, events out.

The OpenAI and Ollama modules parse their bodies into a `GenerationRequest`, call `start()`, and
turn the events of the returned `Run` into their wire formats: `TextDelta` pieces, at most one
`ToolCalls`, then one `Final` (finish reason, usage, timing), or an `Error` that ends the stream.
`Run.collect()` is the same events gathered for a blocking reply. A request for n choices
(`start_choices`) is n runs over one prompt, read once; `Choices` merges their events, each
tagged with its choice's index. Every rule (prompt building,
grammars, tool plans, holding back tool calls, finish reasons, embeddings) lives here once.

Prompt building (template rendering and tokenizing) runs in a worker thread: a multi-megabyte
prompt or a 10,000-message conversation must not stop the event loop answering other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Message, Send

from llmkit.chat.tools import (
    ToolCall,
    ToolCallHold,
    ToolPlan,
    model_tool_syntax,
    plan_tools,
    template_messages,
    tool_system_message,
)
from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.generation.batching import BatchRequest, RequestHandle
from llmkit.generation.constraints import Grammar, constraint_factory
from llmkit.generation.logprobs import TokenLogprob
from llmkit.generation.loop import GenerationResult, Timing, Usage
from llmkit.server.remote_backend import RemoteBackend, RemoteHandle
from llmkit.server.state import ServedModel, ServerState

log = logging.getLogger("llmkit.server")

# How long a streamed reply may wait on a client that does not read before it is cancelled.


# ---- the request, as both APIs describe it ------------------------------------------------
@dataclass
class GenerationRequest:
    """What to generate, in no API's terms: a chat (`messages`) or a raw `prompt` to continue."""

    model: str | None
    params: dict[str, Any] = field(default_factory=dict)  # SamplingParams overrides
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    schema: dict[str, Any] | None = None  # the reply must be JSON valid against it
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    logprobs: int | None = None  # None: none; N: each token's, with N alternatives
    prompt_logprobs: bool = False  # the prompt's own tokens' too (completions' echo)


# ---- the events ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens behind this text, when asked for


@dataclass(frozen=True)
class ToolCalls:
    calls: list[ToolCall]
    content: str = ""  # text the model wrote beside its calls (already streamed text excluded)


@dataclass(frozen=True)
class Final:
    finish_reason: str  # "stop", "length", "tool_calls" or "cancelled"
    usage: Usage
    timing: Timing
    logprobs: list[TokenLogprob] | None = None  # every token's, when asked for
    stopped_by: str | None = None  # the stop token or stop string that ended the text
    prompt_logprobs: list[TokenLogprob] | None = None  # the prompt's tokens (the first: NaN)


@dataclass(frozen=True)
class Error:
    message: str
    cause: Exception | None = field(default=None, compare=False)  # re-raised by collect()


Event = TextDelta | ToolCalls | Final | Error


@dataclass
class Reply:
    """A whole reply: its text (None when there is only tool calls), its calls and its end."""

    content: str | None
    calls: list[ToolCall]
    final: Final


def logprob_entries(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Token log-probabilities as OpenAI's chat API and Ollama both write them."""
    return [
        {
            "token": entry.text,
            "logprob": entry.logprob,
            "bytes": list(entry.bytes),
            "top_logprobs": [
                {"token": alt.text, "logprob": alt.logprob, "bytes": list(alt.bytes)}
                for alt in entry.top
            ],
        }
        for entry in entries
    ]


def finish_reason(generation_reason: str, calls: list[ToolCall]) -> str:
    """The one finish reason of a reply; each API maps it onto its own words."""
    if calls:
        return "tool_calls"
    if generation_reason in ("length", "cancelled"):
        return generation_reason
    return "stop"


# ---- building a job -----------------------------------------------------------------------
@dataclass
class Job:
    """A request ready for the scheduler, and what is needed to read its reply."""

    served: ServedModel
    request: BatchRequest
    tool_plan: ToolPlan | None = None


def sampling_params(served: ServedModel, **overrides: Any) -> Any:
    """The model's defaults with the request's values on top; bad values raise InvalidParameterError."""
    if isinstance(overrides.get("stop"), str):
        overrides["stop"] = [overrides["stop"]]
    return served.model.params(**overrides)


def message_text(content: Any) -> str:
    """OpenAI content may be a list of parts; only text parts can be used by these models."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidParameterError(
                f"Message content of type '{kind}' is not supported; send text."
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def _batch_request(
    served: ServedModel,
    prompt_ids: list[int],
    params: Any,
    schema: dict[str, Any] | None,
    plan: ToolPlan | None,
    logprobs: int | None = None,
    prompt_logprobs: bool = False,
) -> BatchRequest:
    """The scheduler's request, with the reply's grammar as a maker of token constraints."""
    # llguidance on every engine: it masks the vocabulary at close to free-text speed, where
    # llama.cpp's GBNF sampler costs about as much as the model (docs/benchmarks.md). It is
    # compiled here, in the request's thread, so a schema it cannot express is a 400.
    grammar = Grammar.from_json_schema(schema) if schema is not None else None
    if grammar is None and plan is not None:
        grammar = plan.grammar
    constraint = constraint_factory(grammar, served.model.engine) if grammar else None
    return BatchRequest(
        prompt_ids, params, constraint, logprobs=logprobs, prompt_logprobs=prompt_logprobs
    )


def build_job(state: ServerState, ask: GenerationRequest) -> Job:
    """Prompt tokens, parameters and grammar for a request. Slow for big prompts: run it in a thread."""
    served = state.get(ask.model)
    model = served.model
    params = sampling_params(served, **ask.params)
    if ask.messages is None:
        prompt = ask.prompt or ""
        prompt_ids = model.raw_prompt_ids(prompt)
        if state.settings.log_prompts:
            log.info("prompt for %s: %r", served.name, prompt)
        return Job(
            served,
            _batch_request(
                served, prompt_ids, params, ask.schema, None, ask.logprobs, ask.prompt_logprobs
            ),
        )

    plan = plan_tools(ask.tools, ask.tool_choice, model_tool_syntax(model)) if ask.tools else None
    if plan is not None and ask.schema is not None:
        raise InvalidParameterError(
            "Use either tools or a response format, not both in one request."
        )
    messages = [
        {**message, "content": message_text(message.get("content"))} for message in ask.messages
    ]
    messages = template_messages(messages, native=bool(plan and plan.native))
    messages = model.with_system(messages)
    if plan is not None and not plan.native:
        note = tool_system_message(plan.tools)
        if messages and messages[0].get("role") == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        else:
            messages.insert(0, {"role": "system", "content": note})
    prompt_ids = model.prompt_ids(messages, tools=plan.tools if plan and plan.native else None)
    if state.settings.log_prompts:
        log.info("prompt for %s: %r", served.name, model.detokenize(prompt_ids))
    return Job(
        served, _batch_request(served, prompt_ids, params, ask.schema, plan, ask.logprobs), plan
    )


async def start(state: ServerState, ask: GenerationRequest) -> Run:
    """Build the prompt off the event loop, then queue it.

    Raises the caller's mistakes (InvalidParameterError, ContextOverflowError: 400) and a full
    queue (QueueFullError: 503) before any reply is sent.
    """
    return (await start_choices(state, ask, 1)).runs[0]


async def start_choices(state: ServerState, ask: GenerationRequest, n: int) -> Choices:
    """`start` for n answers to one prompt: it is read once and decoded as n sequences.

    n must be 1 to the model's slots (InvalidParameterError otherwise, naming the limit).
    """
    job = await asyncio.to_thread(build_job, state, ask)
    scheduler = job.served.scheduler
    if isinstance(scheduler, RemoteBackend):  # an engine server generates; no grammar travels
        if n != 1:
            raise InvalidParameterError(
                "n above 1 needs a local engine; this model is generated by an engine server, "
                "one choice per request."
            )
        runs = [Run(job, await scheduler.submit(job.request, ask.schema, job.tool_plan))]
    elif n == 1:  # on the loop's own thread: the handles deliver chunks to this loop
        runs = [Run(job, scheduler.submit(job.request))]
    else:
        runs = [Run(job, handle) for handle in scheduler.submit_choices(job.request, n)]
    for run in runs:
        run.on_finish = state.exchange_hook(ask, run.model_name)
    return Choices(runs)


# ---- one running request ------------------------------------------------------------------
class Run:
    """A queued request: read its `events()` (streaming) or `collect()` it (blocking)."""

    # Called with the GenerationResult of a finished generation (`serve --log` keeps it).
    on_finish: Callable[[GenerationResult], None] | None = None

    def __init__(self, job: Job, handle: RequestHandle | RemoteHandle) -> None:
        self.job, self.handle = job, handle

    @property
    def model_name(self) -> str:
        return self.job.served.name

    def cancel(self) -> None:
        """Stop generating (harmless once finished); the slot frees before the next step."""
        self.handle.cancel()

    async def events(self) -> AsyncIterator[Event]:
        """TextDelta pieces, then ToolCalls if any, then Final; or an Error that ends it.

        Leaving early (a closed connection) cancels the generation.
        """
        hold = ToolCallHold(self.job.tool_plan is not None)
        pending: list[TokenLogprob] = []  # log-probabilities of text still held back
        try:
            async for chunk in self.handle:
                pending.extend(chunk.logprobs or ())
                text = hold.release(chunk.text)
                if text:
                    yield TextDelta(text, tuple(pending))
                    pending = []
        except LlmkitError as error:
            yield Error(str(error), error)
            return
        except Exception as error:
            log.exception("generation failed for %s", self.model_name)
            yield Error("Generation failed on the server; see its log.", error)
            return
        finally:
            self.handle.cancel()
        text, calls = hold.finish()
        if calls:
            yield ToolCalls(calls, text)
        elif text or pending:
            yield TextDelta(text, tuple(pending))
        result = self.handle.result
        if result is None:  # the scheduler ended the stream without a result: treat as cancelled
            result = GenerationResult("", "cancelled", Usage(), Timing())
        if self.on_finish is not None:
            self.on_finish(result)
        reason = finish_reason(result.finish_reason, calls)
        yield Final(
            reason, result.usage, result.timing, result.logprobs, result.stopped_by,
            result.prompt_logprobs,
        )  # fmt: skip

    async def collect(self, disconnected: Callable[[], Awaitable[bool]] | None = None) -> Reply:
        """The whole reply; an Error is raised. A client that hangs up cancels the generation."""
        watcher = (
            asyncio.create_task(_cancel_on_hang_up(self, disconnected)) if disconnected else None
        )
        parts: list[str] = []
        calls: list[ToolCall] = []
        final: Final | None = None
        try:
            async for event in self.events():
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, ToolCalls):
                    calls = event.calls
                    parts.append(event.content)
                elif isinstance(event, Final):
                    final = event
                else:  # the caller's own error (4xx/503), or a failure of ours (500)
                    raise event.cause or LlmkitError(event.message)
        finally:
            await _stop_watcher(watcher)
            self.cancel()
        assert final is not None
        text = "".join(parts)
        if calls:
            return Reply(text.strip() or None, calls, final)
        return Reply(text, calls, final)


class Choices:
    """The runs of one request for n choices (one run when n is 1), cancelled together."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs

    @property
    def model_name(self) -> str:
        return self.runs[0].model_name

    @property
    def job(self) -> Job:
        return self.runs[0].job

    def cancel(self) -> None:
        for run in self.runs:
            run.cancel()

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Each run's events as they come, with the run's index; the first Error ends them all.

        Every choice ends with its own Final (or the Error). Leaving early cancels them all.
        """
        if len(self.runs) == 1:
            async for event in self.runs[0].events():
                yield 0, event
            return
        queue: asyncio.Queue[tuple[int, Event | None]] = asyncio.Queue()

        async def pump(index: int, run: Run) -> None:
            try:
                async for event in run.events():
                    queue.put_nowait((index, event))
            finally:
                queue.put_nowait((index, None))

        tasks = [asyncio.create_task(pump(index, run)) for index, run in enumerate(self.runs)]
        try:
            running = len(tasks)
            while running:
                index, item = await queue.get()
                if item is None:
                    running -= 1
                    continue
                yield index, item
                if isinstance(item, Error):
                    return
        finally:
            self.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def collect(
        self, disconnected: Callable[[], Awaitable[bool]] | None = None
    ) -> list[Reply]:
        """Every choice's whole reply, in order; an Error is raised (and the rest cancelled)."""
        if len(self.runs) == 1:
            return [await self.runs[0].collect(disconnected)]
        watcher = (
            asyncio.create_task(_cancel_on_hang_up(self, disconnected)) if disconnected else None
        )
        try:
            return list(await asyncio.gather(*(run.collect() for run in self.runs)))
        finally:
            await _stop_watcher(watcher)
            self.cancel()


async def _stop_watcher(watcher: asyncio.Task[None] | None) -> None:
    """Stop a hang-up watcher started beside a collect(), if one was."""
    if watcher is not None:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _cancel_on_hang_up(
    run: Run | Choices, disconnected: Callable[[], Awaitable[bool]]
) -> None:
    while not await disconnected():
        await asyncio.sleep(0.25)
    run.cancel()


def combined_usage(finals: Sequence[Final]) -> Usage:
    """The usage of n choices of one prompt: the prompt counted once, every choice's tokens."""
    return Usage(
        finals[0].usage.prompt_tokens,
        sum(final.usage.completion_tokens for final in finals),
        min(final.usage.cached_prompt_tokens for final in finals),
    )


# ---- streaming it to a client -------------------------------------------------------------
class _ClientStalled(Exception):
    pass


class RunStream(StreamingResponse):
    """A streamed reply that ends its run however the stream ends.

    A client that stops reading fills its socket buffers, and then each send waits. Past
    `stall_seconds` the reply is abandoned and the generation cancelled, so a client that never
    reads cannot hold a slot until max_tokens while others queue.
    """

    def __init__(
        self,
        run: Run | Choices,
        content: AsyncIterator[bytes],
        *,
        stall_seconds: float,
        media_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.run, self.stall_seconds = run, stall_seconds

    async def stream_response(self, send: Send) -> None:
        async def bounded_send(message: Message) -> None:
            try:
                with anyio.fail_after(self.stall_seconds):
                    await send(message)
            except TimeoutError:
                raise _ClientStalled from None

        try:
            await super().stream_response(bounded_send)
        except _ClientStalled:
            log.warning(
                "a client read nothing of its %s stream for %.0f s; its generation is cancelled",
                self.run.model_name,
                self.stall_seconds,
            )
        finally:
            self.run.cancel()
            iterator = self.body_iterator
            if hasattr(iterator, "aclose"):
                await iterator.aclose()


def stream(
    state: ServerState,
    run: Run | Choices,
    content: AsyncIterator[bytes],
    media_type: str,
    headers: dict[str, str] | None = None,
) -> RunStream:
    return RunStream(
        run,
        content,
        stall_seconds=state.settings.stall_seconds,
        media_type=media_type,
        headers=headers,
    )


# ---- embeddings ---------------------------------------------------------------------------
@dataclass
class Embeddings:
    model_name: str
    vectors: list[list[float]]
    tokens: int


def embedding_inputs(value: Any) -> list[str]:
    """A string or a non-empty list of strings, as both APIs accept."""
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise InvalidParameterError(
            "input must be a string or a non-empty list of strings (token arrays are not supported)."
        )
    return inputs


async def embed(state: ServerState, model_name: str | None, value: Any) -> Embeddings:
    """Unit-length vectors for each input text, computed off the event loop."""
    inputs = embedding_inputs(value)
    served = await asyncio.to_thread(state.get, model_name)  # may load the model

    def compute() -> tuple[list[list[float]], int]:
        embedder = served.embedder  # created on first use, which loads a context
        vectors, tokens = [], 0
        for text in inputs:
            vector, count = embedder.embed(text)
            vectors.append(vector)
            tokens += count
        return vectors, tokens

    vectors, tokens = await asyncio.to_thread(compute)
    return Embeddings(served.name, vectors, tokens)
