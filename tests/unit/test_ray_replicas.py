"""`--replicas` options, the /metrics merge across replicas, and a clear error without Ray."""

from __future__ import annotations

import sys

import pytest
from tests.helpers.cli import run_cli

from llmkit.errors import InvalidParameterError, MissingExtraError
from llmkit.server.ray_replicas import (
    ReplicaOptions,
    check_replicable,
    merge_metrics,
    replica_options,
    run_replicas,
)
from llmkit.server.state import ServerSettings

REPLICA_A = """\
# HELP llmkit_completion_tokens_total Tokens generated.
# TYPE llmkit_completion_tokens_total counter
llmkit_completion_tokens_total{model="smollm2"} 10
# HELP llmkit_time_to_first_token_seconds_p95 Time to first token, 95th percentile.
# TYPE llmkit_time_to_first_token_seconds_p95 gauge
llmkit_time_to_first_token_seconds_p95{model="smollm2"} 0.5
# HELP llmkit_uptime_seconds Seconds up.
# TYPE llmkit_uptime_seconds gauge
llmkit_uptime_seconds 7
"""
REPLICA_B = REPLICA_A.replace("} 10", "} 32").replace("} 0.5", "} 0.25")


def test_metrics_are_summed_and_shown_per_replica() -> None:
    text = merge_metrics({"a": REPLICA_A, "b": REPLICA_B})
    lines = text.splitlines()
    assert "llmkit_replicas 2" in lines
    assert 'llmkit_completion_tokens_total{model="smollm2"} 42' in lines
    assert 'llmkit_completion_tokens_total{model="smollm2",replica="a"} 10' in lines
    assert 'llmkit_completion_tokens_total{model="smollm2",replica="b"} 32' in lines
    # Percentiles do not add up: the slowest replica's stands for all.
    assert 'llmkit_time_to_first_token_seconds_p95{model="smollm2"} 0.5' in lines
    assert 'llmkit_uptime_seconds{replica="b"} 7' in lines
    # Each family keeps one HELP and one TYPE, right before all of its samples.
    assert lines.count("# TYPE llmkit_completion_tokens_total counter") == 1
    start = lines.index("# TYPE llmkit_completion_tokens_total counter")
    assert all(line.startswith("llmkit_completion_tokens") for line in lines[start + 1 : start + 4])


def test_one_replica_merges_to_its_own_figures() -> None:
    lines = merge_metrics({"only": REPLICA_A}).splitlines()
    assert 'llmkit_completion_tokens_total{model="smollm2"} 10' in lines
    assert "llmkit_replicas 1" in lines


def test_no_replica_options_means_no_ray() -> None:
    assert replica_options(None, None, None, None) is None


def test_replica_options_and_autoscaling_bounds() -> None:
    assert replica_options(2, None, None, None) == ReplicaOptions(replicas=2)
    assert replica_options(None, None, None, "10.0.0.5:6379") == ReplicaOptions(
        ray_address="10.0.0.5:6379"
    )
    scaled = replica_options(None, 1, 4, None)
    assert scaled == ReplicaOptions(replicas=1, min_replicas=1, max_replicas=4)
    assert scaled is not None and scaled.autoscaling and scaled.most == 4
    assert replica_options(None, None, 3, None) == ReplicaOptions(1, 1, 3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((5, 1, 3, None), "--replicas 5 must lie between --min-replicas 1 and --max-replicas 3."),
        (
            (None, 4, 2, None),
            "--replicas 4 must lie between --min-replicas 4 and --max-replicas 2.",
        ),
        ((0, None, None, None), "--replicas must be at least 1, not 0."),
    ],
)
def test_bad_replica_options_are_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(InvalidParameterError) as error:
        replica_options(*arguments)
    assert str(error.value) == message


def test_replicas_refuse_remote_engine_servers() -> None:
    with pytest.raises(InvalidParameterError, match="llmkit's own engines"):
        check_replicable(ServerSettings(engine="vllm"))


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    for name in ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.setenv(name, "0")  # set on the way; put back afterwards
    with pytest.raises(MissingExtraError) as error:
        run_replicas(["smollm2"], ServerSettings(), ReplicaOptions())
    assert "ray" in str(error.value)


def test_cli_refuses_bad_replica_counts_in_one_sentence() -> None:
    result = run_cli("serve", "smollm2", "--replicas", "0")
    assert result.returncode == 2
    assert result.stderr == "Error: --replicas must be at least 1 replica (got 0).\n"
    result = run_cli("serve", "smollm2", "--replicas", "3", "--max-replicas", "2")
    assert result.returncode == 2
    assert "must lie between --min-replicas 3 and --max-replicas 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_deployment_carries_slots_queue_cpus_and_autoscaling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    pytest.importorskip("ray.serve")
    from llmkit.server.ray_replicas import _deployment

    settings = ServerSettings(parallel=3, max_queue=7)
    fixed = _deployment(settings, ReplicaOptions(replicas=2), threads=1)
    assert fixed.num_replicas == 2
    assert fixed.max_ongoing_requests == 3 + 2  # the slots, and room for /health and /metrics
    assert fixed.max_queued_requests == 7
    assert fixed.ray_actor_options["num_cpus"] == 1
    scaled = _deployment(settings, ReplicaOptions(2, 1, 4), threads=2)
    autoscaling = scaled._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 4)
    assert autoscaling.initial_replicas == 2
    assert autoscaling.target_ongoing_requests == 3
    assert scaled.ray_actor_options["num_cpus"] == 2
