"""Tools from an MCP server (the official `mcp` SDK), over stdio or streamable HTTP.

`mcp_tools("python my_server.py")` starts the server as a child process and speaks MCP over its
stdin/stdout; `mcp_tools("http://127.0.0.1:8000/mcp")` connects to a running server. Either way the
session lives on an event loop of its own, in a background thread, for as long as the tools are
used: the agent loop calls each tool as a plain function, which hands the call to that loop and
waits for the answer under the tool's timeout. A server that fails to start, stops answering or
dies mid-run is one sentence (at start) or an observation for the model (mid-run), never a hang.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import shlex
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import IO, Any

from llmkit.agent.functions import DEFAULT_TIMEOUT, MAX_TIMEOUT, Tool, ToolError

START_TIMEOUT = 30.0  # seconds a server has to start and list its tools


class McpError(ToolError):
    """An MCP server that cannot be started, reached, or used."""


class McpToolFailed(Exception):
    """A call the server answered with an error, or could not answer (it stopped)."""


class McpTools(list[Tool]):
    """The tools of one MCP server, a list; `close()` (or `with`) ends the session and the server."""

    def __init__(self, tools: Iterable[Tool], connection: _Connection) -> None:
        super().__init__(tools)
        self.connection = connection

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> McpTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mcp_tools(
    server: str,
    *,
    timeout: float = START_TIMEOUT,
    tool_timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
) -> McpTools:
    """The tools an MCP server offers, as llmkit Tools.

    Args:
        server: A command that starts a server speaking MCP on stdio ("python my_server.py"), or
            the http(s) URL of a streamable-HTTP server ("http://127.0.0.1:8000/mcp").
        timeout: Seconds the server has to start and list its tools.
        tool_timeout: Seconds each call may take before the model is told it timed out.
        env: Extra environment variables for a server started from a command.
    """
    if not isinstance(server, str) or not server.strip():
        raise McpError("mcp_tools needs a server command or an http(s) URL.")
    if not 0 < timeout <= MAX_TIMEOUT or not 0 < tool_timeout <= MAX_TIMEOUT:
        raise McpError(f"MCP timeouts must be between 0 and {MAX_TIMEOUT:g} seconds.")
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise McpError("MCP tools need the mcp package: pip install 'llmkit[agent]'.") from None
    connection = _Connection(server.strip(), env, tool_timeout)
    listed = connection.start(timeout)
    tools = [_as_tool(entry, connection, tool_timeout) for entry in listed]
    return McpTools(tools, connection)


def _as_tool(entry: Any, connection: _Connection, timeout: float) -> Tool:
    name = entry.name
    schema = dict(entry.input_schema or {"type": "object"})
    schema.pop("title", None)  # "distance_lyArguments": noise in the prompt

    def call(**arguments: Any) -> str:
        return connection.call(name, arguments)

    call.__name__ = name
    return Tool(name, (entry.description or "").strip(), schema, call, timeout=timeout)


class _Connection:
    """One MCP session, entered and left by one task on a background event loop."""

    def __init__(self, server: str, env: dict[str, str] | None, tool_timeout: float) -> None:
        self.server, self.env, self.tool_timeout = server, env, tool_timeout
        self.is_url = server.startswith(("http://", "https://"))
        self.session: Any = None
        self.failure: str | None = None  # why the session ended, once it has
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmkit-mcp", daemon=True
        )
        self._stop: asyncio.Event | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._errlog: IO[str] | None = None
        self._closed = False

    @property
    def shown(self) -> str:
        return self.server if len(self.server) <= 80 else self.server[:77] + "..."

    # ---- start and stop --------------------------------------------------------------------
    def start(self, timeout: float) -> list[Any]:
        self._thread.start()
        ready: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        self._main = asyncio.run_coroutine_threadsafe(self._serve(ready), self._loop)
        try:
            return ready.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self.close()
            raise McpError(
                f"The MCP server '{self.shown}' did not start within {timeout:g} seconds"
                f"{self._stderr_tail()}."
            ) from None
        except McpError:
            self.close()
            raise
        finally:
            if not self._closed:
                atexit.register(self.close)

    async def _serve(self, ready: concurrent.futures.Future[list[Any]]) -> None:
        from mcp import ClientSession

        self._stop = asyncio.Event()
        try:
            async with self._transport() as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(
                    read, write, read_timeout_seconds=self.tool_timeout + 5
                ) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    self.session = session
                    ready.set_result(list(listed.tools))
                    await self._stop.wait()
        except Exception as error:  # any failure of the transport or the session, in one line
            self.failure = _one_line(error)
            if not ready.done():
                ready.set_exception(
                    McpError(
                        f"The MCP server '{self.shown}' could not be used: {self.failure}"
                        f"{self._stderr_tail()}."
                    )
                )
        finally:
            self.session = None
            if self.failure is None:
                self.failure = "the session was closed"

    def _transport(self) -> Any:
        if self.is_url:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(self.server)
        from mcp import StdioServerParameters, stdio_client

        try:
            words = shlex.split(self.server)
        except ValueError as error:
            raise McpError(f"The MCP server command cannot be read: {error}.") from None
        if words[0] in ("python", "python3"):
            words[0] = sys.executable  # the same interpreter (and packages) as this process
        # The server's own log goes to a file, so its tracebacks do not fill the terminal; its
        # last line explains a server that fails to start.
        self._errlog = tempfile.TemporaryFile(  # noqa: SIM115 (closed by close())
            "w+", encoding="utf-8", errors="replace"
        )
        parameters = StdioServerParameters(command=words[0], args=words[1:], env=self.env)
        return stdio_client(parameters, errlog=self._errlog)

    def close(self) -> None:
        """End the session (and a server started from a command); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._stop is not None and self._main is not None and not self._main.done():
            self._loop.call_soon_threadsafe(self._stop.set)
            # A session that fails while closing is closed all the same.
            with contextlib.suppress(Exception):
                self._main.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if self._errlog is not None:
            self._errlog.close()

    def _stderr_tail(self) -> str:
        """The server's last line on stderr, to explain why it did not start."""
        if self._errlog is None or self._errlog.closed:
            return ""
        try:
            self._errlog.flush()
            self._errlog.seek(0)
            lines = [line.strip() for line in self._errlog.read()[-4000:].splitlines()]
        except (OSError, ValueError):
            return ""
        last = next((line for line in reversed(lines) if line), "")
        return f" (it said: {last[:200]})" if last else ""

    # ---- calls -----------------------------------------------------------------------------
    def call(self, name: str, arguments: dict[str, Any]) -> str:
        session = self.session
        if session is None:
            raise McpToolFailed(f"the MCP server has stopped ({self.failure})")
        future = asyncio.run_coroutine_threadsafe(
            session.call_tool(name, arguments, read_timeout_seconds=self.tool_timeout),
            self._loop,
        )
        try:
            result = future.result(timeout=self.tool_timeout + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpToolFailed(f"no answer within {self.tool_timeout:g} seconds") from None
        except Exception as error:
            raise McpToolFailed(f"the MCP server failed: {_one_line(error)}") from None
        text = _result_text(result)
        if getattr(result, "is_error", False):
            raise McpToolFailed(text or "the server reported an error")
        return text


def _result_text(result: Any) -> str:
    """A call's result as the model reads it: its text blocks, else its structured content."""
    texts = [block.text for block in getattr(result, "content", []) or [] if hasattr(block, "text")]
    if texts:
        return "\n".join(texts)
    structured = getattr(result, "structured_content", None)
    if structured is not None:
        return json.dumps(structured, ensure_ascii=False)
    return ""


def _one_line(error: BaseException) -> str:
    # anyio wraps failures of a task group in an ExceptionGroup: the first inner one says why.
    while getattr(error, "exceptions", None):
        error = error.exceptions[0]  # type: ignore[attr-defined]
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
