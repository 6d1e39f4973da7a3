"""`llmkit serve --replicas 2` on a two-node Ray cluster (both nodes on 127.0.0.1), with the real
`openai` client: requests spread over both replicas, /metrics sums them, key, page and Host rules
hold, only loopback is listened on, and a replica killed mid-run is replaced without losing a
request that had not started streaming.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, launch_server, metrics

if importlib.util.find_spec("ray") is None:
    pytest.skip("needs the ray extra (pip install 'llmkit[ray]')", allow_module_level=True)
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow
API_KEY = "test-key-123"
PARALLEL = 2  # slots per replica
STREAMED = 96  # tokens per streamed reply: long enough to be cut off mid-way


@dataclass
class RayServe:
    server: Server
    ray: Any  # the ray module, connected to the cluster

    def client(self, **options: Any) -> Any:
        return openai.OpenAI(
            base_url=f"{self.server.url}/v1", api_key=API_KEY, timeout=120, **options
        )

    def replica_nodes(self) -> dict[str, str]:
        """Live replica actor name -> the node it runs on."""
        from ray._private.state import actors

        return {
            info["Name"]: info["Address"]["NodeID"]
            for info in actors().values()
            if info["Name"].startswith("SERVE_REPLICA::") and info["State"] == "ALIVE"
        }

    def streaming_replica(self, timeout: float = 30) -> str:
        """The actor name of a replica with a busy slot (as its /metrics says)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.6)  # the figures are at most half a second old
            for sample, value in metrics(self.server).items():
                if sample.startswith("llmkit_slots_busy{") and "replica=" in sample and value:
                    replica = sample.rsplit('replica="', 1)[1].split('"', 1)[0]
                    return next(
                        name for name in self.replica_nodes() if name.endswith(f"#{replica}")
                    )
        raise AssertionError("no replica reported a busy slot")

    def wait_for_replicas(self, count: int, timeout: float = 150) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.replica_nodes()
            reporting = metrics(self.server).get("llmkit_replicas", 0)
            if len(nodes) == count and reporting == count:
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count} replicas wanted; alive: {nodes}, in /metrics: {reporting}"
                )
            time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_serve(session_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayServe]:
    # Set before Ray is imported: every process of the test cluster then binds 127.0.0.1.
    saved = {
        name: os.environ.get(name)
        for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED")
    }
    os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=True, head_node_args=node)
    try:
        cluster.add_node(**node)
        args = ["smollm2", "--replicas", "2", "--ray-address", cluster.address]
        args += ["--parallel", str(PARALLEL), "--threads", "1", "--context", "512"]
        args += ["--api-key", API_KEY]
        log = tmp_path_factory.mktemp("ray-serve") / "server.log"
        launched = launch_server(args, session_home, log, timeout=240)
        try:
            running = RayServe(next(launched), ray)
            running.wait_for_replicas(2)
            yield running
        finally:
            launched.close()  # stops `llmkit serve`, which takes its replicas down
    finally:
        ray.shutdown()
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def chat(client: Any, number: int, tokens: int = 16) -> Any:
    return client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": f"Tell story number {number}."}],
        max_tokens=tokens,
        temperature=0,
        extra_body={"ignore_eos": True},
    )


def test_requests_spread_over_replicas_on_two_nodes_and_metrics_add_up(ray_serve: RayServe) -> None:
    nodes = ray_serve.replica_nodes()
    assert len(set(nodes.values())) == 2, f"both replicas on one node: {nodes}"
    before = metrics(ray_serve.server)
    client = ray_serve.client(max_retries=0)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda number: chat(client, number), range(8)))
    assert all(reply.usage.completion_tokens == 16 for reply in replies)
    time.sleep(1.5)  # replicas swap their figures every half second
    after = metrics(ray_serve.server)
    total = 'llmkit_completion_tokens_total{model="smollm2"}'
    assert after[total] - before.get(total, 0) == 8 * 16
    per_replica = {
        name: value - before.get(name, 0)
        for name, value in after.items()
        if name.startswith("llmkit_completion_tokens_total{") and "replica=" in name
    }
    assert len(per_replica) == 2 and all(grown > 0 for grown in per_replica.values()), per_replica
    assert after['llmkit_slots_total{model="smollm2"}'] == 2 * PARALLEL


def test_key_page_and_host_rules_hold_behind_ray(ray_serve: RayServe) -> None:
    url = ray_serve.server.url
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/metrics").status_code == 401
    models = httpx.get(f"{url}/v1/models", headers=ray_serve.server.headers)
    assert [model["id"] for model in models.json()["data"]] == ["smollm2"]
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "script-src 'self'" in page.headers["content-security-policy"]
    rebound = httpx.get(
        f"{url}/v1/models", headers={**ray_serve.server.headers, "Host": "evil.example"}
    )
    assert rebound.status_code == 403


def test_ray_listens_only_on_loopback(ray_serve: RayServe) -> None:
    exposed = []
    for process in psutil.Process().children(recursive=True):
        try:
            sockets = process.net_connections("inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN and sock.laddr.ip not in (
                "127.0.0.1",
                "::1",
                "::ffff:127.0.0.1",
            ):
                exposed.append((process.name(), sock.laddr))
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_a_killed_replica_is_replaced_and_no_unstarted_request_is_lost(ray_serve: RayServe) -> None:
    ray = ray_serve.ray
    client = ray_serve.client()  # the client's own retries, as users have them (2)
    streaming = threading.Event()

    def streamed(number: int) -> tuple[str, int, int]:
        """('whole' or 'cut', chunks received, text pieces among them)."""
        chunks = pieces = 0
        try:
            stream = client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"Tell story number {number}."}],
                max_tokens=STREAMED,
                temperature=0,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            for chunk in stream:
                chunks += 1  # the first (the role) comes once the replica accepted the request
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    streaming.set()
        except openai.APIConnectionError:
            return "cut", chunks, pieces
        return "whole", chunks, pieces

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        streams = [pool.submit(streamed, number) for number in range(4)]
        assert streaming.wait(120)
        victim = ray_serve.streaming_replica()  # only streams were sent so far
        plain = [pool.submit(chat, client, number, 48) for number in range(4, 10)]
        time.sleep(0.5)  # some wait behind the victim's slots, others in Ray's router
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        outcomes = [future.result(timeout=300) for future in streams]
        answers = [future.result(timeout=300) for future in plain]  # none raised

    assert all(answer.usage.completion_tokens == 48 for answer in answers)
    # A stream the killed replica had begun answering (decoding, or accepted and waiting for one
    # of its slots) ends in the client's clean connection error after what it had sent; every
    # other stream is whole. A request not yet answered is never lost: Ray routes it elsewhere.
    cut = [chunks for outcome, chunks, _ in outcomes if outcome == "cut"]
    assert cut and all(chunks >= 1 for chunks in cut), outcomes
    assert all(pieces == STREAMED for outcome, _, pieces in outcomes if outcome == "whole"), (
        outcomes
    )

    replaced = ray_serve.wait_for_replicas(2)
    assert victim not in replaced
    assert chat(ray_serve.client(max_retries=0), 99).usage.completion_tokens == 16
