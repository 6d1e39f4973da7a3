"""Prometheus text for /metrics: requests, tokens in and out, queue depth, tok/s, time to first token."""

from __future__ import annotations

from llmkit.server.state import ServerState


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def render_metrics(state: ServerState) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP llmkit_{name} {help_text}")
        lines.append(f"# TYPE llmkit_{name} {kind}")
        lines.extend(f"llmkit_{name}{labels} {value:g}" for labels, value in samples)

    metric(
        "http_requests_total",
        "counter",
        "HTTP requests by path and status.",
        [
            (f'{{path="{path}",status="{status}"}}', count)
            for (path, status), count in sorted(state.http_requests.items())
        ],
    )
    models = list(state.models.values())

    def per_model(read) -> list[tuple[str, float]]:
        return [(f'{{model="{served.name}"}}', read(served)) for served in models]

    metric(
        "generation_requests_total",
        "counter",
        "Generation requests accepted by the scheduler.",
        per_model(lambda s: s.scheduler.stats.requests_total),
    )
    metric(
        "generation_finished_total",
        "counter",
        "Generation requests finished, by reason.",
        [
            (f'{{model="{served.name}",reason="{reason}"}}', count)
            for served in models
            for reason, count in sorted(served.scheduler.stats.requests_finished.items())
        ],
    )
    metric(
        "prompt_tokens_total",
        "counter",
        "Prompt tokens evaluated.",
        per_model(lambda s: s.scheduler.stats.prompt_tokens_total),
    )
    metric(
        "completion_tokens_total",
        "counter",
        "Tokens generated.",
        per_model(lambda s: s.scheduler.stats.completion_tokens_total),
    )
    metric(
        "queue_depth",
        "gauge",
        "Requests waiting for a free slot.",
        per_model(lambda s: s.scheduler.queue_depth),
    )
    metric(
        "slots_busy", "gauge", "Slots generating now.", per_model(lambda s: s.scheduler.busy_slots)
    )
    metric("slots_total", "gauge", "Parallel slots.", per_model(lambda s: s.scheduler.parallel))
    metric(
        "tokens_per_second",
        "gauge",
        "Tokens generated per second over the last 10 seconds.",
        per_model(lambda s: round(s.scheduler.stats.tokens_per_second(), 3)),
    )
    metric(
        "time_to_first_token_seconds_sum",
        "counter",
        "Sum of times to first token.",
        per_model(lambda s: s.scheduler.stats.first_token_seconds_sum),
    )
    metric(
        "time_to_first_token_seconds_count",
        "counter",
        "Requests that produced a first token.",
        per_model(lambda s: s.scheduler.stats.first_token_count),
    )
    for q in (0.5, 0.95):
        metric(
            f"time_to_first_token_seconds_p{int(q * 100)}",
            "gauge",
            f"Time to first token, {int(q * 100)}th percentile of the last 1000 requests.",
            per_model(
                lambda s, q=q: _quantile(list(s.scheduler.stats.recent_first_token_seconds), q)
            ),
        )
    return "\n".join(lines) + "\n"
