"""A local HTTP server that serves files the way the Hugging Face hub does (HEAD + ranged GET), and
lists a repository's files as the hub's tree API does (`/api/models/OWNER/REPO/tree/REVISION`)."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    """Serves {repo}/resolve/{revision}/{filename} for the files it is given (keys are
    'OWNER/REPO/PATH'), and their listing; records requests."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        self.fail_after_bytes: int | None = None  # cut the next GET short, to test resuming
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _target(self) -> Path | None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    return hub.files.get(f"{parts[0]}/{parts[1]}/{'/'.join(parts[4:])}")
                return None

            def _headers(self, path: Path, status: int, start: int = 0) -> None:
                data_size = path.stat().st_size
                self.send_response(status)
                self.send_header("ETag", f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(data_size - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{data_size - 1}/{data_size}")
                self.end_headers()

            def _not_found(self) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()

            def do_HEAD(self) -> None:
                hub.requests.append(("HEAD", self.path, None))
                path = self._target()
                if path is None:
                    self._not_found()
                    return
                self._headers(path, 200)

            def _tree(self) -> bool:
                """The hub's `list_repo_tree` answer: every file of the repository, one page."""
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] != ["api", "models"] or len(parts) < 6 or parts[4] != "tree":
                    return False
                repo = f"{parts[2]}/{parts[3]}/"
                entries = [
                    {"type": "file", "path": key[len(repo) :], "size": path.stat().st_size,
                     "oid": hashlib.sha1(key.encode()).hexdigest()}
                    for key, path in sorted(hub.files.items()) if key.startswith(repo)
                ]  # fmt: skip
                if not entries:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.end_headers()
                    return True
                body = json.dumps(entries).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return True

            def do_GET(self) -> None:
                range_header = self.headers.get("Range")
                hub.requests.append(("GET", self.path, range_header))
                if self._tree():
                    return
                path = self._target()
                if path is None:
                    self._not_found()
                    return
                start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
                self._headers(path, 206 if range_header else 200, start)
                data = path.read_bytes()[start:]
                if hub.fail_after_bytes is not None:
                    cut, hub.fail_after_bytes = hub.fail_after_bytes, None
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.wfile.write(data)

        return Handler
