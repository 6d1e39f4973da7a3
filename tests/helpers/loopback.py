"""A real llmkit server (uvicorn) on a free loopback port, run in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmkit.server.state import ServerState


@contextmanager
def serve(state: ServerState, timeout: float = 20) -> Iterator[str]:
    """Serve `state` over HTTP; yields the server's URL (http://127.0.0.1:PORT) and stops it on
    exit. Closing the state is left to the caller."""
    import uvicorn

    from llmkit.server.app import create_app

    config = uvicorn.Config(
        create_app(state), host="127.0.0.1", port=0, log_level="critical", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
