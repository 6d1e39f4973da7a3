"""The server's model pool on the scripted fake engine and a fake clock: loading on demand,
keep_alive expiry, LRU eviction under the memory budget, in-flight protection, one load per model."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from tests.helpers.fake_engine import FakeEngine
from tests.helpers.loopback import serve

from llmkit.errors import InvalidParameterError, ModelNotFoundError
from llmkit.generation.batching import BatchScheduler
from llmkit.model import Model
from llmkit.server.model_pool import (
    FOREVER,
    ModelBusyError,
    ModelPool,
    ModelTooLargeError,
    parse_keep_alive,
    parse_size,
)
from llmkit.server.state import ServedModel
from llmkit.store.store import ModelManifest, ModelStore

KNOWN = ("a", "b", "c", "big")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Loads fake-engine models with a real batch scheduler; counts loads and closes."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.loads: list[str] = []
        self.closed: list[str] = []
        self.gate = gate
        self.fail: Exception | None = None

    def __call__(self, name: str) -> ServedModel:
        if name not in KNOWN:
            raise ModelNotFoundError(f"no model {name}")
        self.loads.append(name)
        if self.gate is not None:
            assert self.gate.wait(timeout=20)
        if self.fail is not None:
            raise self.fail
        manifest = ModelManifest(name, "/nowhere.gguf", "gguf", "0" * 64, 1, "test")
        model = Model(manifest, FakeEngine({0: b"<end>"}, [0], end_of_generation=[0]))
        served = ServedModel(name, model, BatchScheduler(model, parallel=1))
        close = served.close

        def closing() -> None:
            self.closed.append(name)
            close()

        served.close = closing  # type: ignore[method-assign]
        return served


def make_pool(
    loader: Loader, *, budget: int | None = None, keep_alive: float = 300.0, **kwargs: object
) -> tuple[ModelPool, Clock]:
    clock = Clock()
    sizes: dict[str, int] = {"big": 1000}
    estimate: Callable[[str], int] = lambda name: sizes.get(name, 100)  # noqa: E731
    pool = ModelPool(
        loader,
        estimate=estimate,
        budget=lambda used: budget,
        keep_alive=keep_alive,
        clock=clock,
        reaper=False,
        **kwargs,  # type: ignore[arg-type]
    )
    return pool, clock


def use(pool: ModelPool, name: str, keep_alive: float | None = None) -> ServedModel:
    """One request that uses NAME and ends."""
    with pool.request_scope(keep_alive):
        return pool.acquire(name)


def test_a_model_loads_when_first_asked_for_and_once_only() -> None:
    loader = Loader()
    pool, _ = make_pool(loader)
    try:
        first = use(pool, "a")
        assert use(pool, "a:latest") is first
        assert loader.loads == ["a"] and list(pool.models()) == ["a"]
        with pytest.raises(ModelNotFoundError):
            use(pool, "nothing")
        assert list(pool.models()) == ["a"]
    finally:
        pool.close()
    assert loader.closed == ["a"]


def test_an_idle_model_unloads_when_its_keep_alive_runs_out() -> None:
    loader = Loader()
    pool, clock = make_pool(loader, keep_alive=300)
    try:
        use(pool, "a")
        use(pool, "b", keep_alive=30)
        clock.now += 29
        assert pool.reap() == []
        [b] = [m for m in pool.loaded() if m.name == "b"]
        assert b.expires_in == pytest.approx(1)
        clock.now += 2
        assert pool.reap() == ["b"] and loader.closed == ["b"]
        clock.now += 300
        assert pool.reap() == ["a"] and pool.models() == {}
    finally:
        pool.close()


def test_keep_alive_zero_unloads_after_the_request_and_negative_never() -> None:
    loader = Loader()
    pool, clock = make_pool(loader)
    try:
        use(pool, "a", keep_alive=0)
        use(pool, "b", keep_alive=parse_keep_alive(-1))
        assert pool.reap() == ["a"]
        clock.now += 10**9
        assert pool.reap() == [] and [m.expires_in for m in pool.loaded()] == [FOREVER]
    finally:
        pool.close()


def test_a_request_in_flight_keeps_its_model_past_its_expiry() -> None:
    loader = Loader()
    pool, clock = make_pool(loader, keep_alive=1)
    try:
        with pool.request_scope():
            pool.acquire("a")
            clock.now += 100
            assert pool.reap() == []
            assert pool.unload("a") == "unloading"  # `llmkit stop` while it answers
        assert pool.reap() == ["a"]
    finally:
        pool.close()


def test_the_least_recently_used_idle_model_makes_room() -> None:
    loader = Loader()
    pool, clock = make_pool(loader, budget=250)
    try:
        use(pool, "a")
        clock.now += 1
        use(pool, "b")
        clock.now += 1
        use(pool, "a")  # a is now the more recent
        clock.now += 1
        use(pool, "c")
        assert sorted(pool.models()) == ["a", "c"] and loader.closed == ["b"]
        assert pool.memory_used() == 200
    finally:
        pool.close()


def test_a_model_answering_requests_is_never_evicted() -> None:
    loader = Loader()
    pool, _ = make_pool(loader, budget=150)
    try:
        with pool.request_scope():
            pool.acquire("a")
            with pool.request_scope(), pytest.raises(ModelBusyError, match="retry"):
                pool.acquire("b")
            assert list(pool.models()) == ["a"] and loader.closed == []
        use(pool, "b")  # a is idle now: it makes room
        assert list(pool.models()) == ["b"] and loader.closed == ["a"]
    finally:
        pool.close()


def test_a_model_larger_than_the_budget_is_refused_before_anything_unloads() -> None:
    loader = Loader()
    pool, _ = make_pool(loader, budget=500)
    try:
        use(pool, "a")
        with pytest.raises(
            ModelTooLargeError, match=r"about 1000 bytes .* the memory budget is 500 bytes"
        ):
            use(pool, "big")
        assert list(pool.models()) == ["a"] and loader.loads == ["a"]
    finally:
        pool.close()


def test_concurrent_requests_for_an_unloaded_model_load_it_once() -> None:
    gate = threading.Event()
    loader = Loader(gate)
    pool, _ = make_pool(loader)
    got: list[ServedModel] = []
    try:
        threads = [threading.Thread(target=lambda: got.append(use(pool, "a"))) for _ in range(6)]
        for thread in threads:
            thread.start()
        while not loader.loads:  # the first has started loading; the others wait for it
            threading.Event().wait(0.01)
        assert pool.models() == {}  # still loading: not listed as loaded
        gate.set()
        for thread in threads:
            thread.join(timeout=20)
        assert loader.loads == ["a"] and len(got) == 6 and len({id(s) for s in got}) == 1
        assert [m.in_flight for m in pool.loaded()] == [0]
    finally:
        pool.close()


def test_a_failed_load_reaches_every_waiter_and_the_next_request_tries_again() -> None:
    gate = threading.Event()
    loader = Loader(gate)
    loader.fail = RuntimeError("out of memory")
    pool, _ = make_pool(loader)
    errors: list[BaseException] = []

    def request() -> None:
        try:
            use(pool, "a")
        except RuntimeError as error:
            errors.append(error)

    try:
        threads = [threading.Thread(target=request) for _ in range(3)]
        for thread in threads:
            thread.start()
        while not loader.loads:
            threading.Event().wait(0.01)
        gate.set()
        for thread in threads:
            thread.join(timeout=20)
        assert len(errors) == 3 and loader.loads == ["a"] and pool.models() == {}
        loader.fail = None
        use(pool, "a")
        assert loader.loads == ["a", "a"]
    finally:
        pool.close()


def test_pinned_models_stay_for_good_and_a_fixed_list_names_its_models() -> None:
    loader = Loader()
    pool, clock = make_pool(loader, names=["a", "b"], pinned=["a"], budget=150)
    try:
        use(pool, "a")
        clock.now += 10**6
        assert pool.reap() == [] and [m.expires_in for m in pool.loaded()] == [FOREVER]
        with pytest.raises(ModelTooLargeError, match="models kept loaded take 100 bytes"):
            use(pool, "b")  # b cannot push out the pinned a
        with pytest.raises(ModelNotFoundError, match="available: a, b"):
            use(pool, "c")
        assert pool.unload("a") == "pinned" and pool.unload("b") == "not loaded"
        assert list(pool.models()) == ["a"]
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300), ("30s", 30), ("1h30m", 5400), ("1.5s", 1.5), ("500ms", 0.5), (0, 0),
     ("0", 0), (120, 120), ("90", 90), (-1, math.inf), ("-1m", math.inf), (2.5, 2.5)],
)  # fmt: skip
def test_keep_alive_is_read_as_ollama_writes_it(value: object, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m", "", True, None, [], "5x"])
def test_a_bad_keep_alive_is_one_sentence(value: object) -> None:
    with pytest.raises(InvalidParameterError, match="keep_alive must be a duration"):
        parse_keep_alive(value)


def test_memory_sizes() -> None:
    assert parse_size("8GB") == 8 * 10**9 and parse_size("512MiB") == 512 * 2**20
    assert parse_size("1000") == 1000 and parse_size("1.5g") == 1.5e9
    for bad in ("lots", "0", "-1GB", "GB", "8XB"):
        with pytest.raises(InvalidParameterError, match="not a memory size"):
            parse_size(bad)


# ---- through a real server on loopback -------------------------------------------------------
@pytest.fixture
def on_demand_url() -> Iterator[str]:
    """A real server on a free loopback port whose pool loads fake-engine models on demand."""
    pytest.importorskip("uvicorn")
    from llmkit.server.state import ServerSettings, ServerState

    pool = ModelPool(Loader(), estimate=lambda name: 100, keep_alive=300.0)
    state = ServerState([], ServerSettings(), pool=pool)
    with serve(state) as url:
        yield url
    state.close()


def test_keep_alive_over_http_loads_expires_and_unloads(on_demand_url: str) -> None:
    httpx = pytest.importorskip("httpx").Client(timeout=60)
    ask = {"model": "a", "prompt": "hi", "raw": True, "stream": False, "keep_alive": "90s"}
    assert httpx.post(f"{on_demand_url}/api/generate", json=ask).status_code == 200
    [shown] = httpx.get(f"{on_demand_url}/api/ps").json()["models"]
    assert shown["name"] == "a" and shown["size"] == 100
    expires = datetime.fromisoformat(shown["expires_at"].replace("Z", "+00:00"))
    assert 60 < (expires - datetime.now(timezone.utc)).total_seconds() <= 90
    unload = httpx.post(f"{on_demand_url}/api/generate", json={"model": "a", "keep_alive": 0})
    assert unload.json()["done_reason"] == "unload"
    assert httpx.get(f"{on_demand_url}/api/ps").json() == {"models": []}
    for path, body in (
        ("/api/generate", {"model": "a", "prompt": "hi", "keep_alive": "soon"}),
        ("/v1/completions", {"model": "a", "prompt": "hi", "keep_alive": [1]}),
    ):
        refused = httpx.post(f"{on_demand_url}{path}", json=body)
        assert refused.status_code == 400 and "keep_alive must be a duration" in refused.text
    assert httpx.get(f"{on_demand_url}/api/ps").json() == {"models": []}  # refused: not loaded
    missing = httpx.post(f"{on_demand_url}/api/generate", json={"model": "zzz", "prompt": "x"})
    assert missing.status_code == 404


def test_show_answers_from_the_store_without_loading(fresh_home: Path, tiny_gguf: Path) -> None:
    """Clients that list models ask /api/show for each: that must not load (or evict) any."""
    httpx = pytest.importorskip("httpx").Client(timeout=60)
    from llmkit.server.state import ServerSettings, ServerState

    ModelStore(fresh_home).import_model(tiny_gguf, "a", link=True)
    loader = Loader()
    pool = ModelPool(loader, estimate=lambda name: 100, keep_alive=300.0)
    state = ServerState([], ServerSettings(), pool=pool, home=str(fresh_home))
    with serve(state) as url:
        shown = httpx.post(f"{url}/api/show", json={"model": "a:latest"})
        assert shown.status_code == 200, shown.text
        assert loader.loads == [] and httpx.get(f"{url}/api/ps").json() == {"models": []}
        body = shown.json()
        assert body["modelfile"] == f"FROM {tiny_gguf}\n"
        assert body["details"]["format"] == "gguf" and body["capabilities"][0] == "completion"
        assert body["model_info"]["architecture"] == "llama"
        missing = httpx.post(f"{url}/api/show", json={"model": "zzz"})
        assert missing.status_code == 404 and loader.loads == []
    state.close()


def test_pull_refuses_unknown_names_and_an_unreachable_hub_before_streaming(
    on_demand_url: str, monkeypatch: pytest.MonkeyPatch, fresh_home: object
) -> None:
    httpx = pytest.importorskip("httpx").Client(timeout=60)
    from llmkit.server.launch import free_loopback_port

    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_loopback_port()}")  # nobody there
    pull = f"{on_demand_url}/api/pull"
    unknown = httpx.post(pull, json={"model": "no-such-model"})
    assert unknown.status_code == 404 and "not a built-in model" in unknown.json()["error"]
    bad = httpx.post(pull, json={"model": "hf.co/not-a-repository"})
    assert bad.status_code == 400 and "OWNER/REPO" in bad.json()["error"]
    offline = httpx.post(pull, json={"model": "hf.co/owner/repo:Q4_K_M"})
    assert offline.status_code == 502 and set(offline.json()) == {"error"}


def test_a_streamed_hub_pull_reports_its_bytes(
    on_demand_url: str,
    monkeypatch: pytest.MonkeyPatch,
    fresh_home: Path,
    tiny_gguf: Path,
    tmp_path: Path,
) -> None:
    """Ollama's clients draw a bar from `completed` / `total` while the file downloads."""
    import json

    from tests.helpers.fake_hub import HubServer

    httpx = pytest.importorskip("httpx").Client(timeout=60)
    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    # Enough bytes for several of huggingface_hub's 10 MiB chunks.
    big = tmp_path / "big.gguf"
    big.write_bytes(tiny_gguf.read_bytes() + bytes(25 * 2**20))
    with HubServer({"owner/tiny-GGUF/tiny-Q4_K_M.gguf": big}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        reply = httpx.post(f"{on_demand_url}/api/pull", json={"model": "hf.co/owner/tiny-GGUF"})
    assert reply.status_code == 200, reply.text
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    size = big.stat().st_size
    downloading = [line for line in lines if "completed" in line and "digest" not in line]
    assert len(downloading) >= 3 and all(line["total"] == size for line in downloading)
    done = [line["completed"] for line in downloading]
    assert done == sorted(done) and 0 < done[0] < size and done[-1] == size
    assert ModelStore(fresh_home).names() == ["tiny:q4_k_m"]


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (["--keep-alive", "soon"], "--keep-alive: keep_alive must be a duration"),
        (["--memory-budget", "lots"], "--memory-budget: 'lots' is not a memory size"),
    ],
)
def test_bad_pool_options_are_refused_before_anything_loads(args: list[str], sentence: str) -> None:
    from tests.helpers.cli import run_cli

    result = run_cli("serve", *args)
    assert result.returncode == 2 and result.stderr.startswith(f"Error: {sentence}")
    assert "Traceback" not in result.stderr
