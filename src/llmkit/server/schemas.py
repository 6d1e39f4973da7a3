"""Request bodies of the OpenAI and Ollama APIs, validated once; unknown fields are accepted.

Types are strict where a loose reading would change the meaning (`stream: "yes"`, a role nobody
defined), and every number has the range documented in docs/security.md; the sampling bounds come
from llmkit.params so the schemas and SamplingParams cannot disagree.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from llmkit.generation.logprobs import MAX_TOP_LOGPROBS
from llmkit.params import (
    MAX_REPEAT_LAST_N,
    MAX_SEED,
    MAX_STOP_LENGTH,
    MAX_STOP_STRINGS,
    MAX_TOKENS_LIMIT,
    MAX_TOP_K,
)

MAX_CONTEXT_OPTION = 1 << 20  # num_ctx and the like: far above any model, far below an overflow
MAX_COUNT_OPTION = 1 << 16  # num_thread, num_gpu, num_batch, num_keep: small counts
MAX_TEXT_FIELD = 1 << 20  # a recipe's system prompt or template: far above any real one

Temperature = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)]
UnitFloat = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Penalty = Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LENGTH)]

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
OLLAMA_ROLES = ("system", "user", "assistant", "tool")

# Ollama's numeric options: (integer?, lowest, highest). Options outside this table are accepted
# and ignored, as Ollama ignores what a runner does not use; these are checked even when ignored.
OLLAMA_OPTION_RANGES: dict[str, tuple[bool, float, float]] = {
    "temperature": (False, 0, 10),
    "top_k": (True, 0, MAX_TOP_K),
    "top_p": (False, 0, 1),
    "min_p": (False, 0, 1),
    "typical_p": (False, 0, 1),
    "tfs_z": (False, 0, 10),
    "seed": (True, -1, MAX_SEED),  # Ollama: -1 is a random seed
    "repeat_penalty": (False, 0, 10),
    "repeat_last_n": (True, -1, MAX_REPEAT_LAST_N),  # Ollama: -1 looks back over the context
    "presence_penalty": (False, -2, 2),
    "frequency_penalty": (False, -2, 2),
    "num_predict": (True, -2, MAX_TOKENS_LIMIT),
    "num_ctx": (True, 1, MAX_CONTEXT_OPTION),
    "num_keep": (True, -1, MAX_CONTEXT_OPTION),
    "num_batch": (True, 1, MAX_CONTEXT_OPTION),
    "num_thread": (True, 0, MAX_COUNT_OPTION),
    "num_gpu": (True, -1, MAX_COUNT_OPTION),
    "main_gpu": (True, 0, MAX_COUNT_OPTION),
    "mirostat": (True, 0, 2),
    "mirostat_tau": (False, 0, 100),
    "mirostat_eta": (False, 0, 10),
}


def check_ollama_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """Refuse a numeric option of the wrong type or outside its range, with its name."""
    for name, value in (options or {}).items():
        if name not in OLLAMA_OPTION_RANGES or value is None:
            continue
        integer, low, high = OLLAMA_OPTION_RANGES[name]
        kind = "an integer" if integer else "a number"
        number = not isinstance(value, bool) and isinstance(value, (int, float))
        if not number or not math.isfinite(value) or (integer and value != int(value)):
            raise ValueError(f"options.{name} must be {kind}")
        if not low <= value <= high:
            shown = (f"{low:,.0f}", f"{high:,.0f}") if integer else (f"{low:g}", f"{high:g}")
            raise ValueError(f"options.{name} must be {kind} from {shown[0]} to {shown[1]}")
    stop = (options or {}).get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > MAX_STOP_STRINGS
            or not all(isinstance(item, str) and len(item) <= MAX_STOP_LENGTH for item in stops)
        ):
            raise ValueError(
                f"options.stop must be a string or a list of at most {MAX_STOP_STRINGS} strings "
                f"of at most {MAX_STOP_LENGTH} characters"
            )
    return options


class _Lenient(BaseModel):
    # Clients send fields we do not use (user, metadata, keep_alive, ...); accept and ignore them.
    model_config = ConfigDict(extra="allow")


# ---- OpenAI --------------------------------------------------------------------------------
class ChatMessage(_Lenient):
    role: Literal[OPENAI_ROLES]  # type: ignore[valid-type]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _OpenAISampling(_Lenient):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: Temperature | None = None
    top_p: UnitFloat | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOP_STRINGS)] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=128)
    logprobs: StrictBool | int | None = None
    # llama.cpp extensions, as llama.cpp's own server accepts them
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)
    min_p: UnitFloat | None = None
    repeat_penalty: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] | None = None
    ignore_eos: StrictBool | None = None


class ChatCompletionRequest(_OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class CompletionRequest(_OpenAISampling):
    prompt: str | list[str]
    echo: StrictBool = False


class EmbeddingRequest(_Lenient):
    model: str | None = None
    input: str | list[str]
    encoding_format: str | None = None


# ---- Ollama --------------------------------------------------------------------------------
class OllamaMessage(_Lenient):
    role: Literal[OLLAMA_ROLES]  # type: ignore[valid-type]
    content: str | None = ""
    tool_calls: list[dict[str, Any]] | None = None
    images: list[str] | None = None
    tool_name: str | None = None


class _OllamaCommon(_Lenient):
    model: str
    stream: StrictBool = True
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    _options = field_validator("options")(check_ollama_options)


class OllamaChatRequest(_OllamaCommon):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class OllamaGenerateRequest(_OllamaCommon):
    prompt: str = ""
    system: str | None = None
    raw: StrictBool = False
    images: list[str] | None = None


class OllamaEmbedRequest(_Lenient):
    model: str
    input: str | list[str]


class OllamaShowRequest(_Lenient):
    model: str | None = None
    name: str | None = None  # older clients send "name"


class OllamaRecipeMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field(max_length=MAX_TEXT_FIELD)


class OllamaCreateRequest(_Lenient):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str
    from_: str | None = Field(default=None, alias="from")
    system: str | None = Field(default=None, max_length=MAX_TEXT_FIELD)
    template: str | None = Field(default=None, max_length=MAX_TEXT_FIELD)
    parameters: dict[str, Any] | None = None
    messages: list[OllamaRecipeMessage] | None = Field(default=None, max_length=200)
    license: str | list[str] | None = None
    adapters: dict[str, str] | None = None
    files: dict[str, str] | None = None
    quantize: str | None = None
    stream: StrictBool = True

    _parameters = field_validator("parameters")(check_ollama_options)


class OllamaCopyRequest(_Lenient):
    source: str
    destination: str


class OllamaDeleteRequest(_Lenient):
    model: str | None = None
    name: str | None = None  # older clients send "name"


# ---- Anthropic -----------------------------------------------------------------------------
class AnthropicMessage(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class AnthropicRequest(_Lenient):
    model: str | None = None
    max_tokens: int = Field(ge=1, le=MAX_TOKENS_LIMIT)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: Annotated[list[Stop], Field(max_length=MAX_STOP_STRINGS)] | None = None
    temperature: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    top_p: UnitFloat | None = None
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)
    stream: StrictBool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


# ---- OpenAI Responses ----------------------------------------------------------------------
class ResponsesRequest(_Lenient):
    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: Temperature | None = None
    top_p: UnitFloat | None = None
    stream: StrictBool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    previous_response_id: str | None = Field(default=None, max_length=100)
    store: StrictBool = True
    metadata: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
