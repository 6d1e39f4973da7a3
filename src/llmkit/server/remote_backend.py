"""Generation on an OpenAI-compatible engine server: vLLM, llama.cpp's llama-server, SGLang, llmkit.

The seam is the scheduler, not the Engine: a remote engine cannot take one decode call per token,
so it stands where the `BatchScheduler` stands. Everything above it stays llmkit's: the template is
rendered and tokenized here, tool calls are parsed here, stop strings are matched here. The engine
server gets the finished prompt on `/v1/completions` (as token ids, or as text for a server that
takes only text) and streams text back; this module turns that stream into the scheduler's
`GenerationChunk`s and `GenerationResult`, so `service.Run` reads it like a local request.

What cannot travel: token constraints compiled for the local vocabulary (a tool grammar that forces
a call), per-token log-probabilities, and a JSON schema to a server that takes none on completions.
Those requests are refused with one sentence instead of being answered differently.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkit.chat.tools import ToolPlan
from llmkit.errors import ContextOverflowError, InvalidParameterError, LlmkitError
from llmkit.generation.batching import BatchRequest, QueueFullError, SchedulerStats
from llmkit.generation.loop import GenerationChunk, GenerationResult, Timing, Usage
from llmkit.generation.stopping import StopMatcher
from llmkit.server.state import ServedModel, ServerSettings

log = logging.getLogger("llmkit.server")
ENGINE_KEY_ENV = "LLMKIT_ENGINE_API_KEY"  # the key the engine server wants, if it wants one
VLLM_START_SECONDS = 1800.0  # a 70B model takes minutes to load and compile
TOKENIZER_CONTEXT = 16  # the local engine only tokenizes; its own context is never used

CONNECT_SECONDS = 10.0
# A long prompt on a busy engine server may take minutes before its first token.
READ_SECONDS = 600.0


@dataclass(frozen=True)
class EngineServer:
    """What `/v1/models` of an engine server says about itself."""

    url: str  # without a trailing slash or /v1
    model: str  # the id it lists first: the name requests must carry
    owned_by: str  # "vllm", "llamacpp", "sglang", "llmkit", ...
    context_length: int | None  # vLLM's max_model_len, when the server reports one

    @property
    def takes_token_ids(self) -> bool:
        # llmkit's own /v1/completions takes text only; vLLM, llama-server and SGLang take ids,
        # which keeps the server from tokenizing the prompt again (and adding a second BOS).
        return self.owned_by != "llmkit"


def normalized_url(url: str) -> str:
    url = url.strip().rstrip("/").removesuffix("/v1")
    if not url.startswith(("http://", "https://")):
        raise InvalidParameterError(
            f"--engine-url must be an http:// or https:// address, not '{url}'."
        )
    return url


def connect(url: str, api_key: str | None = None) -> EngineServer:
    """Ask the engine server which model it serves; a server that does not answer is an error."""
    import httpx

    url = normalized_url(url)
    try:
        response = httpx.get(f"{url}/v1/models", headers=_headers(api_key), timeout=CONNECT_SECONDS)
    except httpx.HTTPError as error:
        raise LlmkitError(f"The engine server at {url} cannot be reached: {error}.") from None
    if response.status_code != 200:
        raise LlmkitError(
            f"The engine server at {url} answered /v1/models with HTTP {response.status_code}: "
            f"{_error_message(response.text)}"
        )
    try:
        listed = response.json()["data"]
        first = listed[0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LlmkitError(
            f"The engine server at {url} lists no model at /v1/models; is it OpenAI-compatible?"
        ) from None
    limit = first.get("max_model_len")
    return EngineServer(
        url,
        str(first["id"]),
        str(first.get("owned_by", "")),
        limit if isinstance(limit, int) else None,
    )


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _error_message(body: str) -> str:
    """The one sentence an OpenAI-style error body carries, or the body itself, shortened."""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)
    return body.strip()[:300] or "no details."


class RemoteBackend:
    """Stands in for a served model's BatchScheduler; the engine server batches and queues."""

    parallel = 0  # slots are the engine server's (vLLM's --max-num-seqs), not counted here
    queue_depth = 0

    def __init__(
        self, model: Any, server: EngineServer, window: int, api_key: str | None = None
    ) -> None:
        import httpx

        self.model, self.server = model, server
        self.slot_context = window  # the most tokens of prompt and reply together
        self.stats = SchedulerStats()
        self.in_flight = 0
        self._api_key = api_key
        self._client: httpx.AsyncClient | None = None
        self._timeout = httpx.Timeout(READ_SECONDS, connect=CONNECT_SECONDS)
        self.on_close: list[Any] = []  # what else ends with it (a vLLM process this server started)

    @property
    def engine_label(self) -> str:
        """What `llmkit serve` prints as the engine: the server that generates."""
        return f"{self.server.owned_by or 'engine server'} at {self.server.url}"

    @property
    def busy_slots(self) -> int:
        return self.in_flight

    def room_for(self, prompt_ids: list[int]) -> int:
        return self.slot_context - len(prompt_ids)

    def body(
        self, request: BatchRequest, schema: dict[str, Any] | None, plan: ToolPlan | None
    ) -> dict[str, Any]:
        """The /v1/completions request for a prompt llmkit has already templated and tokenized."""
        if request.logprobs is not None:
            raise InvalidParameterError(
                "Log-probabilities are not forwarded to an engine server; ask without logprobs."
            )
        if plan is not None and not plan.may_answer_in_text:
            raise InvalidParameterError(
                "A required tool call needs a grammar, which is not forwarded to an engine "
                "server; use tool_choice 'auto'."
            )
        prompt_ids = request.prompt_ids
        if not prompt_ids:
            raise ContextOverflowError("The prompt is empty; there is nothing to continue.")
        room = self.room_for(prompt_ids)
        if room <= 0:
            raise ContextOverflowError(
                f"The prompt is {len(prompt_ids):,} tokens but the context window holds "
                f"{self.slot_context:,}; shorten it."
            )
        params, server = request.params, self.server
        body: dict[str, Any] = {
            "model": server.model,
            "prompt": list(prompt_ids) if server.takes_token_ids else self._prompt_text(prompt_ids),
            "max_tokens": min(params.max_tokens or room, room),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "min_p": params.min_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:  # matched here as well; sent so the server stops generating early
            body["stop"] = list(params.stop)
        if params.ignore_eos:
            body["ignore_eos"] = True
        if server.owned_by == "vllm":
            body["repetition_penalty"] = params.repeat_penalty
            # The model's end-of-turn tokens, which vLLM's generation config may not list.
            body["stop_token_ids"] = sorted(self.model.stop_token_ids)
        else:
            body["repeat_penalty"] = params.repeat_penalty
        if schema is not None:
            if server.owned_by == "llmkit":
                raise InvalidParameterError(
                    "The engine server (llmkit) takes no JSON schema on /v1/completions, so the "
                    "reply could not be held to it; ask without a response format."
                )
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": True},
            }
            if server.owned_by == "llamacpp":
                body["json_schema"] = schema  # llama-server reads this on its completions
        return body

    def _prompt_text(self, prompt_ids: list[int]) -> str:
        # The server tokenizes text again and adds its own BOS where the model wants one; the
        # template's BOS would then come twice.
        model = self.model
        bos = model.engine.tokenizer_facts.bos_id
        if model.format.raw_adds_bos and prompt_ids and prompt_ids[0] == bos:
            prompt_ids = prompt_ids[1:]
        return str(model.detokenize(prompt_ids))

    async def submit(
        self,
        request: BatchRequest,
        schema: dict[str, Any] | None = None,
        plan: ToolPlan | None = None,
    ) -> RemoteHandle:
        """Send the request; the engine server's refusal (a 4xx, a 503) is raised before any reply."""
        import httpx

        body = self.body(request, schema, plan)
        if self._client is None:  # made on the serving event loop, where it is used
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=_headers(self._api_key))
        url = f"{self.server.url}/v1/completions"
        submitted = time.perf_counter()
        try:
            response = await self._client.send(
                self._client.build_request("POST", url, json=body), stream=True
            )
        except httpx.HTTPError as error:
            raise LlmkitError(
                f"The engine server at {self.server.url} cannot be reached: {error}."
            ) from None
        if response.status_code != 200:
            text = (await response.aread()).decode("utf-8", "replace")
            await response.aclose()
            message = f"The engine server refused the request: {_error_message(text)}"
            if response.status_code in (429, 503):
                raise QueueFullError(message)
            if 400 <= response.status_code < 500:
                raise InvalidParameterError(message)
            raise LlmkitError(message)
        self.stats.requests_total += 1
        return RemoteHandle(self, request, response, submitted)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RuntimeError):  # no loop runs: the process is ending anyway
                asyncio.get_running_loop().create_task(client.aclose())
        for stop in reversed(self.on_close):
            stop()
        self.on_close.clear()


class RemoteHandle:
    """The RequestHandle of a remote request: chunks as the engine server streams, then `.result`."""

    def __init__(
        self, backend: RemoteBackend, request: BatchRequest, response: Any, submitted: float
    ) -> None:
        self.backend, self.request, self.submitted = backend, request, submitted
        self.result: GenerationResult | None = None
        self._queue: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        self._stops = StopMatcher(request.params.stop)
        self._parts: list[str] = []
        self._first_at: float | None = None
        self._pieces = 0  # streamed pieces: the token count when the server sends no usage
        self._usage: dict[str, Any] = {}
        backend.in_flight += 1
        self._task = asyncio.get_running_loop().create_task(self._pump(response))

    def cancel(self) -> None:
        """Stop generating: closing the stream makes the engine server abort the request."""
        self.request.cancel.set()
        self._task.cancel()

    async def __aiter__(self) -> AsyncIterator[GenerationChunk]:
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason is not None:
                return

    async def _pump(self, response: Any) -> None:
        import httpx

        try:
            reason, stop_reason = await self._read(response)
            self._end(reason, stop_reason)
        except asyncio.CancelledError:
            self._end("cancelled", None)
        except (httpx.HTTPError, ValueError) as error:
            self.backend.stats.requests_finished["error"] += 1
            self._queue.put_nowait(
                LlmkitError(f"The engine server stopped answering mid-reply: {error}.")
            )
        except LlmkitError as error:
            self.backend.stats.requests_finished["error"] += 1
            self._queue.put_nowait(error)
        finally:
            self.backend.in_flight -= 1
            with contextlib.suppress(Exception):
                await response.aclose()

    async def _read(self, response: Any) -> tuple[str, Any]:
        """Text pieces into chunks until the server finishes or a stop string appears."""
        reason, stop_reason = "length", None
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:  # a failure after the stream began
                raise LlmkitError(f"The engine server failed: {_error_message(data)}")
            if event.get("usage"):
                self._usage = event["usage"]
            for choice in event.get("choices") or ():
                shown = self._stops.feed(choice.get("text") or "")
                self._pieces += 1
                self._emit(shown)
                if self._stops.stopped:
                    return "stop", self._stops.matched
                if choice.get("finish_reason"):
                    reason = "length" if choice["finish_reason"] == "length" else "stop"
                    stop_reason = choice.get("stop_reason")
        self._emit(self._stops.flush())
        return reason, stop_reason

    def _emit(self, text: str) -> None:
        now = time.perf_counter()
        if self._first_at is None:
            self._first_at = now
            stats = self.backend.stats
            stats.first_token_seconds_sum += now - self.submitted
            stats.first_token_count += 1
            stats.recent_first_token_seconds.append(now - self.submitted)
        self.backend.stats.recent_steps.append((now, 1))
        if text:
            self._parts.append(text)
            self._queue.put_nowait(GenerationChunk(text))

    def _end(self, reason: str, stop_reason: Any) -> None:
        now = time.perf_counter()
        usage = Usage(
            int(self._usage.get("prompt_tokens") or len(self.request.prompt_ids)),
            int(self._usage.get("completion_tokens") or self._pieces),
            int((self._usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
        )
        timing = Timing()
        if self._first_at is not None:
            timing.first_token_seconds = timing.prompt_seconds = self._first_at - self.submitted
            timing.generation_seconds = now - self._first_at
        if isinstance(stop_reason, int):  # vLLM names the stop token by its id
            stop_reason = self.backend.model.detokenize([stop_reason])
        self.result = GenerationResult(
            "".join(self._parts), reason, usage, timing, stopped_by=stop_reason
        )
        stats = self.backend.stats
        stats.prompt_tokens_total += usage.prompt_tokens - usage.cached_prompt_tokens
        stats.completion_tokens_total += usage.completion_tokens
        stats.requests_finished[reason] += 1
        self._queue.put_nowait(GenerationChunk("", finish_reason=reason))


# ---- serving a model through an engine server ----------------------------------------------
def served_remote(name: str, settings: ServerSettings, home: str | None = None) -> ServedModel:
    """A served model whose prompts are built here and generated on an engine server.

    Only the model's vocabulary and prompt format are needed here: a GGUF file opens in llama.cpp
    on the CPU with a token-sized context (its weights are mapped, not copied), a Hugging Face
    folder as a tokenizer over a weightless model (engines/tokenizer_only.py).
    """
    from llmkit.engines.base import DEFAULT_CONTEXT, EngineOptions
    from llmkit.model import Model, open_engine
    from llmkit.store.store import ModelStore

    manifest = ModelStore(home).resolve(name)
    stop_vllm = None
    url = settings.engine_url
    if url is None:  # --engine vllm: start vLLM's OpenAI server for this model
        url, stop_vllm = start_vllm(manifest, settings)
    try:
        server = connect(url, os.environ.get(ENGINE_KEY_ENV))
        options = EngineOptions(
            context_length=TOKENIZER_CONTEXT, threads=settings.threads, gpu_layers=0, device="cpu"
        )
        if manifest.format == "gguf":
            engine = open_engine(manifest, "llamacpp", options)
        else:
            from llmkit.engines.tokenizer_only import TokenizerOnlyEngine

            engine = TokenizerOnlyEngine(manifest, options)
        model = Model(manifest, engine)
    except BaseException:
        if stop_vllm is not None:
            stop_vllm()
        raise
    window = (
        settings.context_length
        or server.context_length
        or manifest.info.context_length
        or DEFAULT_CONTEXT
    )
    backend = RemoteBackend(model, server, window, os.environ.get(ENGINE_KEY_ENV))
    if stop_vllm is not None:
        backend.on_close.append(stop_vllm)
    return ServedModel(model.name, model, backend)


def vllm_command(weights: str, name: str, port: int, settings: ServerSettings) -> list[str]:
    """vLLM's OpenAI server for one model, on loopback, with the parallel settings passed on."""
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        weights,
        "--served-model-name",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(settings.tensor_parallel),
        "--pipeline-parallel-size",
        str(settings.pipeline_parallel),
    ]
    if settings.context_length:
        command += ["--max-model-len", str(settings.context_length)]
    return command


def start_vllm(manifest: Any, settings: ServerSettings) -> tuple[str, Any]:
    """Start vLLM on a free loopback port; return its URL and a function that stops it."""
    from llmkit.server.launch import free_loopback_port, run_until_ready

    # Only looked for: vLLM runs in its own process, never imported into this one.
    if importlib.util.find_spec("vllm") is None:
        raise LlmkitError(
            "--engine vllm needs vLLM, which is not installed here; install it on a GPU node "
            "(pip install vllm), or connect to a running engine server with --engine-url."
        )
    if manifest.format == "gguf":
        raise InvalidParameterError(
            f"vLLM serves Hugging Face folders and '{manifest.name}' is a GGUF file; import the "
            "safetensors model, or run llama-server and pass --engine-url."
        )
    port = free_loopback_port()
    log_path = Path(tempfile.mkdtemp(prefix="llmkit-vllm-")) / "vllm.log"
    command = vllm_command(str(manifest.weights_path), manifest.name, port, settings)
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(
            run_until_ready(
                command,
                port,
                "/health",
                log_path,
                name="vLLM",
                timeout=VLLM_START_SECONDS,
            )
        )
    except RuntimeError:
        raise LlmkitError(f"vLLM did not start; its log is {log_path}.") from None
    log.info("vLLM serves %s at %s (log: %s)", manifest.name, server.url, log_path)
    return server.url, stack.close
