"""Request bodies of the OpenAI and Ollama APIs, validated once; unknown fields are accepted."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    # Clients send fields we do not use (user, metadata, keep_alive, ...); accept and ignore them.
    model_config = ConfigDict(extra="allow")


# ---- OpenAI --------------------------------------------------------------------------------
class ChatMessage(_Lenient):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class _OpenAISampling(_Lenient):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    logprobs: bool | int | None = None
    # llama.cpp extensions, as llama.cpp's own server accepts them
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    ignore_eos: bool | None = None


class ChatCompletionRequest(_OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_OpenAISampling):
    prompt: str | list[str]
    echo: bool = False


class EmbeddingRequest(_Lenient):
    model: str | None = None
    input: str | list[str]
    encoding_format: str | None = None


# ---- Ollama --------------------------------------------------------------------------------
class OllamaMessage(_Lenient):
    role: str
    content: str | None = ""
    tool_calls: list[dict[str, Any]] | None = None
    images: list[str] | None = None
    tool_name: str | None = None


class _OllamaCommon(_Lenient):
    model: str
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None


class OllamaChatRequest(_OllamaCommon):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class OllamaGenerateRequest(_OllamaCommon):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    images: list[str] | None = None


class OllamaEmbedRequest(_Lenient):
    model: str
    input: str | list[str]


class OllamaShowRequest(_Lenient):
    model: str | None = None
    name: str | None = None  # older clients send "name"
