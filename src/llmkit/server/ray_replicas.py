"""`llmkit serve --replicas N`: the server app as a Ray Serve deployment, one engine per replica.

Each replica is the app a single `llmkit serve` process runs (APIs, key, origins, page), with its
own engine and batch scheduler; Ray routes requests among replicas, on this machine or across the
nodes of a Ray cluster, and can autoscale between bounds. /metrics on any replica shows every
replica's figures and their sums: replicas swap their figures through one small Ray actor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmkit.errors import InvalidParameterError, LlmkitError
from llmkit.server.state import ServerSettings, ServerState

log = logging.getLogger("llmkit.server")

APP_NAME = "llmkit"
NAMESPACE = "llmkit"
LOOPBACK = "127.0.0.1"
# How often each replica sends its figures and fetches the others'; /metrics is this stale at most.
EXCHANGE_SECONDS = 0.5
# A replica silent this long is gone (killed, or its node lost): its figures leave the sums.
STALE_SECONDS = 5.0
# Requests Ray hands one replica beyond its slots. Past that they wait in Ray's router, not in the
# replica's own queue, so a replica that dies takes only the requests it was decoding with it; the
# headroom keeps /health and /metrics answering while every slot is busy.
HEADROOM = 2
# Ray Serve logs every deployment step at INFO into the server's own output; warnings suffice
# (Ray's own log files keep the rest).
QUIET = {"log_level": "WARNING"}
# Families whose samples are percentiles: no sum means anything, so the merge shows the largest.
_PERCENTILE = re.compile(r"_p\d+$")


@dataclass(frozen=True)
class ReplicaOptions:
    """How many replicas, where: a local Ray started here, or the cluster at `ray_address`."""

    replicas: int = 1
    min_replicas: int | None = None  # both bounds set: Ray Serve autoscales between them
    max_replicas: int | None = None
    ray_address: str | None = None

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    @property
    def most(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.replicas


def replica_options(
    replicas: int | None,
    min_replicas: int | None,
    max_replicas: int | None,
    ray_address: str | None,
) -> ReplicaOptions | None:
    """The options from `--replicas/--min-replicas/--max-replicas/--ray-address`; None: no Ray."""
    if replicas is None and min_replicas is None and max_replicas is None and not ray_address:
        return None
    for flag, value in (
        ("--replicas", replicas),
        ("--min-replicas", min_replicas),
        ("--max-replicas", max_replicas),
    ):
        if value is not None and value < 1:
            raise InvalidParameterError(f"{flag} must be at least 1, not {value}.")
    low = min_replicas if min_replicas is not None else (replicas or 1)
    high = max_replicas if max_replicas is not None else max(low, replicas or 1)
    start = replicas if replicas is not None else low
    if not low <= start <= high:
        raise InvalidParameterError(
            f"--replicas {start} must lie between --min-replicas {low} and --max-replicas {high}."
        )
    autoscale = min_replicas is not None or max_replicas is not None
    return ReplicaOptions(
        replicas=start,
        min_replicas=low if autoscale else None,
        max_replicas=high if autoscale else None,
        ray_address=ray_address or None,
    )


def check_replicable(settings: ServerSettings) -> None:
    """Replicas run llmkit's own engines; a remote engine server has its own parallelism."""
    if settings.engine_url or settings.engine == "vllm":
        raise InvalidParameterError(
            "--replicas runs llmkit's own engines (llamacpp, transformers); vLLM and other engine "
            "servers spread work over GPUs themselves: use --tensor-parallel/--pipeline-parallel "
            "or run one server per GPU behind your own balancer."
        )


# ---- /metrics across replicas ----------------------------------------------------------------
def _with_replica(sample: str, replica: str) -> str:
    """'name{a="b"}' -> 'name{a="b",replica="r"}'; 'name' -> 'name{replica="r"}'."""
    label = f'replica="{replica}"'
    return f"{sample[:-1]},{label}}}" if sample.endswith("}") else f"{sample}{{{label}}}"


def merge_metrics(snapshots: dict[str, str]) -> str:
    """One Prometheus text from each replica's own: sums (no replica label), then each replica's.

    Counters and gauges add up (tokens, requests, busy slots, tok/s); a percentile family shows
    the largest replica's value, since percentiles do not add.
    """
    families: dict[str, list[str]] = {}  # family -> its HELP and TYPE lines
    samples: dict[str, dict[str, dict[str, float]]] = {}  # family -> sample -> replica -> value
    for replica, text in sorted(snapshots.items()):
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    heading = families.setdefault(family, [])
                    if len(heading) < 2 and line not in heading:
                        heading.append(line)
                continue
            if not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            try:
                number = float(value)
            except ValueError:
                continue
            samples.setdefault(family, {}).setdefault(name, {})[replica] = number
    lines = [
        "# HELP llmkit_replicas Replicas whose figures this page holds.",
        "# TYPE llmkit_replicas gauge",
        f"llmkit_replicas {len(snapshots)}",
    ]
    for family, heading in families.items():
        lines.extend(heading)
        by_sample = samples.get(family, {})
        pick = max if _PERCENTILE.search(family) else sum
        lines.extend(f"{name} {pick(values.values()):g}" for name, values in by_sample.items())
        lines.extend(
            f"{_with_replica(name, replica)} {value:g}"
            for name, values in by_sample.items()
            for replica, value in sorted(values.items())
        )
    return "\n".join(lines) + "\n"


class MetricsBoard:
    """A Ray actor holding each replica's latest /metrics text (created by the launcher)."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[float, str]] = {}

    def exchange(self, replica: str, text: str) -> dict[str, str]:
        """Keep this replica's figures; return every live replica's."""
        now = time.monotonic()
        self.latest[replica] = (now, text)
        self.latest = {
            key: entry for key, entry in self.latest.items() if now - entry[0] < STALE_SECONDS
        }
        return {key: entry[1] for key, entry in self.latest.items()}

    def leave(self, replica: str) -> None:
        self.latest.pop(replica, None)


# ---- one replica -----------------------------------------------------------------------------
class LlmkitReplica:
    """One Serve replica: the models loaded into its own engine, the app built around them."""

    def __init__(
        self, models: list[str], settings: ServerSettings, home: str | None, board: Any
    ) -> None:
        import ray
        from ray import serve

        from llmkit.server.state import load_state

        if ray.util.get_node_ip_address() == LOOPBACK:
            _keep_replica_grpc_on_loopback()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.board = board
        self.state = load_state(models, settings, home=home)
        self.others: dict[str, str] = {}
        self.stopping = threading.Event()
        self.exchanger = threading.Thread(
            target=self._exchange, name="llmkit-metrics-exchange", daemon=True
        )
        self.exchanger.start()

    def __serve_build_asgi_app__(self) -> Any:
        from llmkit.server.app import create_app

        return create_app(self.state, metrics_text=self.metrics_text)

    def metrics_text(self, state: ServerState) -> str:
        from llmkit.server.metrics import render_metrics

        return merge_metrics({**self.others, self.replica: render_metrics(state)})

    def _exchange(self) -> None:
        import ray

        from llmkit.server.metrics import render_metrics

        while not self.stopping.wait(EXCHANGE_SECONDS):
            try:
                sent = self.board.exchange.remote(self.replica, render_metrics(self.state))
                self.others = ray.get(sent, timeout=10)
            except Exception as error:  # the board gone: this replica still shows its own
                log.debug("metrics exchange failed: %s", error)

    def __del__(self) -> None:
        self.stopping.set()
        with contextlib.suppress(Exception):
            self.board.leave.remote(self.replica)


def _keep_replica_grpc_on_loopback() -> None:
    # Ray Serve opens each replica's inter-deployment gRPC server on [::] (every interface) even
    # when the whole cluster is on loopback; llmkit never calls it across machines here, so on a
    # loopback node it listens on 127.0.0.1 like every other Ray process.
    try:
        from ray.serve._private import replica as replica_module
    except ImportError:
        return
    original = getattr(replica_module, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "llmkit_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> Any:
        return original(server, address.replace("[::]", LOOPBACK, 1))

    on_loopback.llmkit_loopback = True  # type: ignore[attr-defined]
    replica_module.add_port_to_grpc_server = on_loopback


# ---- the launcher ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaDeployment:
    """What is serving, for the ready message."""

    url: str
    models: list[str]
    replicas: int
    min_replicas: int | None
    max_replicas: int | None
    nodes: int
    threads: int | None
    cluster: str  # "local" or the address joined


def replica_threads(settings: ServerSettings, options: ReplicaOptions) -> int | None:
    """Threads per replica: --threads, else this machine's cores shared out (a local cluster)."""
    if settings.threads:
        return settings.threads
    if options.ray_address:
        return None  # each engine takes its own node's cores
    return max(1, (os.cpu_count() or 1) // options.most)


def run_replicas(
    models: list[str],
    settings: ServerSettings,
    options: ReplicaOptions,
    *,
    home: str | None = None,
    on_ready: Callable[[ReplicaDeployment], None] | None = None,
) -> None:
    """Start Ray (or join `options.ray_address`), deploy the replicas, serve until interrupted."""
    from llmkit.errors import require_module
    from llmkit.server.app import bind_socket
    from llmkit.server.state import check_exposure
    from llmkit.store.store import ModelStore

    local = not options.ray_address
    # Before Ray is first imported: it reads these then.
    _private_ray_environment(on_loopback=local or _is_loopback_address(options.ray_address))
    require_module("ray", feature="llmkit serve --replicas", extra="ray")
    check_exposure(settings)
    check_replicable(settings)
    store = ModelStore(home)
    for name in models:
        store.resolve(name)  # an unknown model fails here, before Ray starts
    if local:
        bind_socket(settings.host, settings.port).close()  # a port in use fails at once
    else:
        _check_reachable(str(options.ray_address))
    threads = replica_threads(settings, options)
    settings = _replica_settings(settings, threads)

    import ray
    from ray import serve

    started = time.monotonic()
    try:
        if local:
            ray.init(
                address="local",  # never join another cluster by accident
                num_cpus=max(os.cpu_count() or 1, (threads or 1) * options.most),
                _node_ip_address=LOOPBACK,
                include_dashboard=False,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(
                address=options.ray_address, namespace=NAMESPACE, logging_level=logging.WARNING
            )
    except Exception as error:  # Ray raises many kinds here; the user needs one sentence
        where = "start a local Ray" if local else f"join the Ray cluster at {options.ray_address}"
        raise LlmkitError(f"Could not {where}: {_first_line(error)}") from None
    serve_was_running = _serve_running()
    try:
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": settings.host, "port": settings.port},
            logging_config=QUIET,
        )
        _check_http_options(settings)
        board = (
            ray.remote(num_cpus=0)(MetricsBoard)
            .options(name=f"{APP_NAME}-metrics", get_if_exists=True)
            .remote()
        )
        app = _deployment(settings, options, threads).bind(models, settings, home, board)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", logging_config=QUIET)
        except Exception as error:
            raise LlmkitError(
                f"The replicas did not start: {_first_line(error)} (Ray's logs: "
                "/tmp/ray/session_latest/logs)."
            ) from None
        log.info("replicas ready in %.1f s", time.monotonic() - started)
        if on_ready:
            shown = f"[{settings.host}]" if ":" in settings.host else settings.host
            on_ready(
                ReplicaDeployment(
                    url=f"http://{shown}:{settings.port}",
                    models=models,
                    replicas=options.replicas,
                    min_replicas=options.min_replicas,
                    max_replicas=options.max_replicas,
                    nodes=len([node for node in ray.nodes() if node.get("Alive")]),
                    threads=threads,
                    cluster="local" if local else str(options.ray_address),
                )
            )
        _wait_for_interrupt()
    finally:
        try:
            if serve_was_running:
                serve.delete(APP_NAME)  # a shared cluster keeps its other applications
            else:
                serve.shutdown()
        finally:
            ray.shutdown()


def _replica_settings(settings: ServerSettings, threads: int | None) -> ServerSettings:
    from dataclasses import replace

    return replace(settings, threads=threads)


def _deployment(settings: ServerSettings, options: ReplicaOptions, threads: int | None) -> Any:
    from ray import serve

    config: dict[str, Any] = {
        "name": APP_NAME,
        "max_ongoing_requests": settings.parallel + HEADROOM,
        # llmkit's --queue: requests waiting for a replica; past it, Ray answers 503.
        "max_queued_requests": max(1, settings.max_queue),
        "ray_actor_options": {"num_cpus": threads or 1},
        "graceful_shutdown_timeout_s": 10,
    }
    if options.autoscaling:
        config["autoscaling_config"] = {
            "min_replicas": options.min_replicas,
            "max_replicas": options.max_replicas,
            "initial_replicas": options.replicas,
            # A replica with every slot busy is full: more load asks for another replica.
            "target_ongoing_requests": settings.parallel,
        }
    else:
        config["num_replicas"] = options.replicas
    return serve.deployment(serve.ingress()(LlmkitReplica), **config)


def _is_loopback_address(address: str | None) -> bool:
    from llmkit.server.state import is_loopback

    host = (address or "").removeprefix("ray://").rsplit(":", 1)[0]
    return bool(host) and is_loopback(host)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    # Ray retries an unreachable cluster for minutes before giving up; a closed port is known now.
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto', or a form Ray resolves itself
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise LlmkitError(
            f"Cannot reach the Ray cluster at {address}: {error.strerror or error}. Start it with "
            "`ray start --head`, or check --ray-address."
        ) from None


def _private_ray_environment(*, on_loopback: bool) -> None:
    # Ray reports usage to its makers unless told not to; nothing typed into llmkit leaves the
    # machine, and neither should a count of it.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if on_loopback:
        # On Linux Ray listens on every interface unless this is off; off, every Ray process of
        # a cluster on this machine (GCS, raylet, workers, agents, this driver) binds 127.0.0.1.
        # Read at import, and inherited by the processes Ray starts.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _serve_running() -> bool:
    import ray

    try:
        ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    except ValueError:
        return False
    return True


def _check_http_options(settings: ServerSettings) -> None:
    # Ray Serve keeps one HTTP address per cluster: joining a cluster whose Serve already listens
    # elsewhere would leave llmkit unreachable at the address the user asked for.
    try:
        import ray
        from ray.serve.context import _get_global_client

        config = ray.get(_get_global_client()._controller.get_http_config.remote(), timeout=30)
    except Exception:
        return  # an older or newer Ray without this call: nothing to compare
    if (config.host, config.port) != (settings.host, settings.port):
        raise InvalidParameterError(
            f"Ray Serve on this cluster already listens on {config.host}:{config.port}; "
            f"serve there with --host {config.host} --port {config.port}, or shut its Serve down."
        )


def _wait_for_interrupt() -> None:
    # SIGTERM (a service manager, a test) ends the wait like Ctrl-C, so the replicas and a local
    # Ray are shut down instead of left running.
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
