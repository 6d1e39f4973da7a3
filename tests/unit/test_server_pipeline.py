"""The server's event pipeline on a scripted scheduler: no weights, exact replies.

The pipeline is driven directly (events and the blocking collector) and through a real server on
loopback (wire formats, a client that stops reading, the event loop staying free while a huge
prompt is prepared), and once on the real batch scheduler over the scripted fake engine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.loopback import serve

from llmkit.engines.base import TokenizerFacts
from llmkit.errors import LlmkitError
from llmkit.generation.batching import BatchScheduler
from llmkit.generation.loop import GenerationChunk, GenerationResult, Timing, Usage
from llmkit.model import Model
from llmkit.server import service
from llmkit.server.service import (
    Error,
    Final,
    GenerationRequest,
    TextDelta,
    ToolCalls,
)
from llmkit.server.state import ServedModel, ServerSettings, ServerState
from llmkit.store.store import ModelManifest

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Renders tools into the prompt and asks for tagged calls, as Qwen's template does.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "Call one as <tool_call>{...}</tool_call><|im_end|>\n{% endif %}" + CHATML
)
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
HELLO = [{"role": "user", "content": "Hello"}]


# ---- a model with no weights, and a scheduler that replies from a script ------------------
class CharEngine:
    """Tokens are characters; enough of an engine for a Model to render and tokenize prompts."""

    name = "fake"
    context_length = 1 << 20
    # Token 0 ends a reply; ids up to 299 are characters, enough for grammars to be compiled.
    tokenizer_facts = TokenizerFacts(300, None, 0, frozenset({0}), add_bos=False)

    def __init__(self) -> None:
        self.tokenize_started = threading.Event()
        self.release_tokenize: threading.Event | None = None  # set: tokenize waits for it

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        self.tokenize_started.set()
        if self.release_tokenize is not None:
            self.release_tokenize.wait(timeout=20)
        return [ord(c) for c in text]

    def token_bytes(self, token_id: int) -> bytes:
        return chr(token_id).encode()

    def token_id(self, text: str) -> int | None:
        return None

    def close(self) -> None:
        pass


@dataclass
class Script:
    """What the scheduler answers: pieces of text, then a finish reason or an error."""

    pieces: Sequence[str] = ()
    finish: str = "stop"
    error: Exception | None = None
    endless: str | None = None  # after the pieces, repeat this piece until cancelled
    delay: float = 0.0


class ScriptedHandle:
    def __init__(self, request: Any, script: Script) -> None:
        self.request, self.script = request, script
        self.result: GenerationResult | None = None
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def _pieces(self) -> Iterator[str]:
        yield from self.script.pieces
        while self.script.endless is not None:
            yield self.script.endless

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        texts: list[str] = []
        reason = self.script.finish
        for piece in self._pieces():
            await asyncio.sleep(self.script.delay)
            if self.cancelled.is_set():
                reason = "cancelled"
                break
            texts.append(piece)
            yield GenerationChunk(piece, 0)
        else:
            if self.script.error is not None:
                raise self.script.error
        usage = Usage(len(self.request.prompt_ids), len(texts))
        self.result = GenerationResult("".join(texts), reason, usage, Timing())
        yield GenerationChunk("", None, reason)


class ScriptedScheduler:
    slot_context = 4096
    queue_depth = busy_slots = 0

    def __init__(self) -> None:
        self.script = Script()
        self.handles: list[ScriptedHandle] = []

    def submit(self, request: Any) -> ScriptedHandle:
        handle = ScriptedHandle(request, self.script)
        self.handles.append(handle)
        return handle

    def close(self) -> None:
        pass


class FixedEmbedder:
    def embed(self, text: str) -> tuple[list[float], int]:
        return [1.0, 0.0] if "a" in text else [0.0, 1.0], len(text)


def served_model(name: str, template: str) -> ServedModel:
    manifest = ModelManifest(
        name, "/nowhere.gguf", "gguf", "0" * 64, 1, "test", info={"chat_template": template}
    )
    served = ServedModel(name, Model(manifest, CharEngine()), ScriptedScheduler())  # type: ignore[arg-type]
    served._embedder = FixedEmbedder()
    return served


def make_state(**settings: Any) -> ServerState:
    models = [served_model("plain", CHATML), served_model("toolish", TOOL_TEMPLATE)]
    return ServerState(models, ServerSettings(**settings))


def scheduler(state: ServerState, name: str = "plain") -> ScriptedScheduler:
    return state.models[name].scheduler


async def events_of(state: ServerState, ask: GenerationRequest) -> list[Any]:
    run = await service.start(state, ask)
    return [event async for event in run.events()]


# ---- the pipeline itself ------------------------------------------------------------------
def test_text_streams_piece_by_piece_and_ends_with_usage() -> None:
    state = make_state()
    scheduler(state).script = Script(["Hel", "lo", "!"])
    events = asyncio.run(events_of(state, GenerationRequest("plain", messages=HELLO)))
    assert events[:-1] == [TextDelta("Hel"), TextDelta("lo"), TextDelta("!")]
    final = events[-1]
    assert isinstance(final, Final) and final.finish_reason == "stop"
    prompt = scheduler(state).handles[0].request.prompt_ids
    assert "".join(map(chr, prompt)).endswith(
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert final.usage.prompt_tokens == len(prompt) and final.usage.completion_tokens == 3


@pytest.mark.parametrize("reason", ["stop", "length", "cancelled"])
def test_finish_reasons_pass_through(reason: str) -> None:
    state = make_state()
    scheduler(state).script = Script(["a", "b"], finish=reason)

    async def main() -> service.Reply:
        run = await service.start(state, GenerationRequest("plain", prompt="x"))
        return await run.collect()

    reply = asyncio.run(main())
    assert reply.content == "ab" and reply.calls == [] and reply.final.finish_reason == reason


def test_leaving_the_stream_early_cancels_the_generation() -> None:
    state = make_state()
    scheduler(state).script = Script(["x"], endless="y")

    async def main() -> list[Any]:
        run = await service.start(state, GenerationRequest("plain", messages=HELLO))
        seen = []
        events = run.events()
        async for event in events:
            seen.append(event)
            if len(seen) == 3:
                break
        await events.aclose()
        return seen

    assert asyncio.run(main()) == [TextDelta("x"), TextDelta("y"), TextDelta("y")]
    assert scheduler(state).handles[0].cancelled.is_set()


def test_a_bare_json_tool_call_is_held_back_and_parsed() -> None:
    state = make_state()
    call = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    scheduler(state).script = Script([call[:5], call[5:20], call[20:]])
    ask = GenerationRequest("plain", messages=HELLO, tools=[ADD_TOOL], tool_choice="auto")
    events = asyncio.run(events_of(state, ask))
    assert [type(event) for event in events] == [ToolCalls, Final]
    calls = events[0].calls
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 1, "b": 2})]
    assert events[0].content == "" and events[1].finish_reason == "tool_calls"
    # Without tool syntax in its template, the model was told about the tools in a system message.
    prompt = "".join(map(chr, scheduler(state).handles[0].request.prompt_ids))
    assert '"name": "add"' in prompt and prompt.startswith("<|im_start|>system\nYou can call")


def test_text_that_opens_like_a_call_is_released_whole_at_the_end() -> None:
    state = make_state()
    scheduler(state).script = Script(["{not", " a call}", " but text"])
    ask = GenerationRequest("plain", messages=HELLO, tools=[ADD_TOOL])
    events = asyncio.run(events_of(state, ask))
    assert events[0] == TextDelta("{not a call} but text")
    assert isinstance(events[1], Final) and events[1].finish_reason == "stop"


def test_text_before_a_tagged_call_streams_and_the_call_is_held() -> None:
    state = make_state()
    scheduler(state).script = Script(
        [
            "Sure. <tool",
            '_call>\n{"name": "add", "arguments": "{\\"a\\": 4, \\"b\\": 5}"}',
            "\n</tool_call>",
        ]
    )
    ask = GenerationRequest("toolish", messages=HELLO, tools=[ADD_TOOL])
    state.models["toolish"].scheduler.script = scheduler(state).script
    events = asyncio.run(events_of(state, ask))
    assert events[0] == TextDelta("Sure. ")
    assert isinstance(events[1], ToolCalls) and events[1].calls[0].arguments == {"a": 4, "b": 5}
    assert events[2].finish_reason == "tool_calls" and len(events) == 3
    # The template rendered the tools itself, so no system note was added.
    prompt = "".join(map(chr, state.models["toolish"].scheduler.handles[0].request.prompt_ids))
    assert "You can call" not in prompt and '"name": "add"' in prompt


def test_without_tools_nothing_is_held() -> None:
    state = make_state()
    scheduler(state).script = Script(["{", '"a": 1}'])
    events = asyncio.run(events_of(state, GenerationRequest("plain", messages=HELLO)))
    assert events[:2] == [TextDelta("{"), TextDelta('"a": 1}')]


def test_an_error_mid_stream_ends_it_with_an_error_event() -> None:
    state = make_state()
    scheduler(state).script = Script(["par", "tial"], error=LlmkitError("The decode failed."))
    events = asyncio.run(events_of(state, GenerationRequest("plain", messages=HELLO)))
    assert events == [TextDelta("par"), TextDelta("tial"), Error("The decode failed.")]

    async def blocking() -> None:
        run = await service.start(state, GenerationRequest("plain", messages=HELLO))
        await run.collect()

    with pytest.raises(LlmkitError, match="decode failed"):
        asyncio.run(blocking())


def test_an_unexpected_failure_is_an_error_event_not_a_traceback() -> None:
    state = make_state()
    scheduler(state).script = Script(["x"], error=RuntimeError("boom"))
    events = asyncio.run(events_of(state, GenerationRequest("plain", messages=HELLO)))
    assert events[0] == TextDelta("x") and isinstance(events[1], Error)
    assert "boom" not in events[1].message

    async def blocking() -> None:
        run = await service.start(state, GenerationRequest("plain", messages=HELLO))
        await run.collect()

    with pytest.raises(RuntimeError, match="boom"):  # the app answers it with a 500
        asyncio.run(blocking())


def test_the_blocking_collector_matches_the_stream() -> None:
    state = make_state()
    scheduler(state).script = Script(
        ["Sure.", '<tool_call>{"name": "add", "arguments": {}}</tool_call>']
    )
    ask = GenerationRequest("plain", messages=HELLO, tools=[ADD_TOOL])

    async def main() -> service.Reply:
        return await (await service.start(state, ask)).collect()

    reply = asyncio.run(main())
    assert reply.content == "Sure." and reply.calls[0].name == "add"
    assert reply.final.finish_reason == "tool_calls"


def test_a_hostile_schema_is_refused_before_any_grammar_is_built() -> None:
    state = make_state()
    schema = {"type": "string", "maxLength": 20000}
    ask = GenerationRequest("plain", messages=HELLO, schema=schema)
    with pytest.raises(LlmkitError, match="maxLength"):
        asyncio.run(service.start(state, ask))
    assert scheduler(state).handles == []


def test_embeddings_are_one_function_for_both_apis() -> None:
    state = make_state()
    result = asyncio.run(service.embed(state, "plain", ["a cat", "dog"]))
    assert result.vectors == [[1.0, 0.0], [0.0, 1.0]] and result.tokens == 8
    with pytest.raises(LlmkitError, match="non-empty list of strings"):
        asyncio.run(service.embed(state, "plain", []))
    with pytest.raises(LlmkitError, match="token arrays"):
        asyncio.run(service.embed(state, "plain", [[1, 2]]))


# ---- through a real server on loopback ----------------------------------------------------
@dataclass
class Running:
    url: str
    port: int
    state: ServerState


@pytest.fixture
def running() -> Iterator[Any]:
    """Start a real uvicorn server on a free loopback port around a scripted state."""
    servers = ExitStack()

    def start(**settings: Any) -> Running:
        state = make_state(**settings)
        url = servers.enter_context(serve(state))
        return Running(url, int(url.rsplit(":", 1)[1]), state)

    with servers:
        yield start


def sse_events(text: str) -> list[Any]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else json.loads(line) for line in lines]


def test_openai_wire_format_for_text_tools_and_errors(running) -> None:
    server = running()
    plain = scheduler(server.state)
    plain.script = Script(["Hi", " there"], finish="length")
    body = {
        "model": "plain",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10)
    events = sse_events(reply.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 2
    deltas = [e["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert deltas == ["", "Hi", " there", None]
    assert events[-3]["choices"][0]["finish_reason"] == "length"

    plain.script = Script(['{"name": "add", ', '"arguments": {"a": 1, "b": 2}}'])
    body = {"model": "plain", "messages": HELLO, "tools": [ADD_TOOL], "stream": True}
    events = sse_events(httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10).text)
    calls = events[1]["choices"][0]["delta"]["tool_calls"]
    assert calls[0]["index"] == 0 and calls[0]["function"]["name"] == "add"
    assert json.loads(calls[0]["function"]["arguments"]) == {"a": 1, "b": 2}
    assert events[2]["choices"][0]["finish_reason"] == "tool_calls"
    body["stream"] = False
    blocking = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10).json()
    choice = blocking["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "add"

    plain.script = Script(["par"], error=LlmkitError("The decode failed."))
    body = {"model": "plain", "messages": HELLO, "stream": True}
    events = sse_events(httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=10).text)
    assert events[-1]["error"]["message"] == "The decode failed."

    plain.script = Script(["The", " end"])
    body = {"model": "plain", "prompt": "Once", "stream": True}
    events = sse_events(httpx.post(f"{server.url}/v1/completions", json=body, timeout=10).text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "The end"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_ollama_wire_format_and_capabilities(running) -> None:
    server = running()
    plain = scheduler(server.state)
    plain.script = Script(['{"name": "add", "arguments": {"a": 1, "b": 2}}'])
    body = {"model": "plain", "messages": HELLO, "tools": [ADD_TOOL]}
    lines = [
        json.loads(line)
        for line in httpx.post(f"{server.url}/api/chat", json=body, timeout=10).text.splitlines()
    ]
    assert len(lines) == 1 and lines[0]["done"] and lines[0]["done_reason"] == "stop"
    assert lines[0]["message"]["tool_calls"] == [
        {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    ]

    plain.script = Script(["A", "B"], finish="length")
    lines = [
        json.loads(line)
        for line in httpx.post(
            f"{server.url}/api/generate", json={"model": "plain", "prompt": "x"}, timeout=10
        ).text.splitlines()
    ]
    assert [line["response"] for line in lines] == ["A", "B", ""]
    assert lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 2

    def show(name: str) -> dict[str, Any]:
        return httpx.post(f"{server.url}/api/show", json={"model": name}, timeout=10).json()

    assert "tools" not in show("plain")["capabilities"]
    assert "tools" in show("toolish")["capabilities"]

    openai = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": "plain", "input": ["a", "b"]}, timeout=10
    ).json()
    ollama = httpx.post(
        f"{server.url}/api/embed", json={"model": "plain", "input": ["a", "b"]}, timeout=10
    ).json()
    assert [item["embedding"] for item in openai["data"]] == ollama["embeddings"]
    assert openai["usage"]["prompt_tokens"] == ollama["prompt_eval_count"] == 2


def test_a_client_that_stops_reading_is_cancelled_and_its_slot_freed(running) -> None:
    server = running(stall_seconds=0.5)
    plain = scheduler(server.state)
    plain.script = Script(endless="x" * 4000)  # big pieces fill the socket buffers quickly
    body = json.dumps({"model": "plain", "messages": HELLO, "stream": True}).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (server.port, len(body), body)
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        # ... and read nothing more: the server's sends soon wait on us.
        deadline = time.monotonic() + 15
        while not (plain.handles and plain.handles[0].cancelled.is_set()):
            assert time.monotonic() < deadline, "the stalled stream was never cancelled"
            time.sleep(0.05)
    # A client that reads is unaffected by the bound.
    plain.script = Script(["y" * 4000] * 50, delay=0.01)
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "plain", "messages": HELLO, "stream": True},
        timeout=10,
    )
    events = sse_events(reply.text)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "y" * 4000 * 50 and plain.handles[-1].result.finish_reason == "stop"


def test_health_answers_while_a_huge_prompt_is_prepared(running) -> None:
    server = running()
    engine = server.state.models["plain"].model.engine
    engine.release_tokenize = release = threading.Event()
    plain = scheduler(server.state)
    plain.script = Script(["done"])
    messages = [{"role": "user", "content": f"message {i}"} for i in range(10_000)]
    answers: list[Any] = []

    def ask() -> None:
        body = {"model": "plain", "messages": messages}
        answers.append(httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30))

    thread = threading.Thread(target=ask)
    thread.start()
    try:
        # Tokenizing waits until released: a loop that ran it itself could not answer /health now.
        assert engine.tokenize_started.wait(timeout=20)
        health = httpx.get(f"{server.url}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert not answers
    finally:
        release.set()
        thread.join(timeout=30)
    assert answers[0].json()["choices"][0]["message"]["content"] == "done"


# ---- on the real batch scheduler over the scripted fake engine ----------------------------
def test_the_pipeline_on_the_batch_scheduler_and_the_fake_engine() -> None:
    call = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    pieces = {300: b"Hello", 301: b" world", 302: b"<|im_end|>", 303: call.encode()}

    def script(prompt_ids: Sequence[int]) -> list[int]:
        prompt = "".join(map(chr, prompt_ids))
        return [303, 302] if '"name": "add"' in prompt else [300, 301, 302]

    engine = FakeEngine(pieces, script, context_length=4096, end_of_generation=[302])
    manifest = ModelManifest(
        "fake", "/nowhere.gguf", "gguf", "0" * 64, 1, "test",
        info={"chat_template": TOOL_TEMPLATE, "eos_token": "<|im_end|>"},
    )  # fmt: skip
    model = Model(manifest, engine)
    state = ServerState([ServedModel("fake", model, None)], ServerSettings())

    async def main() -> tuple[list[Any], service.Reply, service.Reply]:
        served = state.models["fake"]
        served.scheduler = BatchScheduler(model, parallel=2, max_queue=4, slot_context=2048)
        try:
            run = await service.start(state, GenerationRequest("fake", messages=HELLO))
            events = [event async for event in run.events()]
            limited = GenerationRequest("fake", {"max_tokens": 1}, messages=HELLO)
            short = await (await service.start(state, limited)).collect()
            ask = GenerationRequest("fake", messages=HELLO, tools=[ADD_TOOL])
            tool = await (await service.start(state, ask)).collect()
            return events, short, tool
        finally:
            served.scheduler.close()

    events, short, tool = asyncio.run(main())
    assert events[:-1] == [TextDelta("Hello"), TextDelta(" world")]
    assert events[-1].finish_reason == "stop" and events[-1].usage.completion_tokens == 3
    assert short.content == "Hello" and short.final.finish_reason == "length"
    assert tool.calls[0].arguments == {"a": 1, "b": 2} and tool.final.finish_reason == "tool_calls"
