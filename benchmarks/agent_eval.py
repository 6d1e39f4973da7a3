"""Agents on the astronomer's held-out tasks (examples/agents/astro): how often they get it right.

    python benchmarks/agent_eval.py                         # all three setups, the built-in model
    python benchmarks/agent_eval.py --setups llmkit --model /path/finetuned.gguf --label finetuned

Setups, each on the same model and the same tools:
  llmkit      llmkit.Agent: every reply a grammar-constrained call, the answer a final_answer call.
  plain       the tools described in the system prompt, free generation, calls parsed from the
              text (what a user gets from a small model without constraints).
  smolagents  smolagents' ToolCallingAgent against `llmkit serve` on loopback (OpenAI API).

A task succeeds when the run called the expected tool, that call's arguments were valid (it ran
without error), and a number in the final answer is within the task's tolerance of the known one.
Prints JSON: per setup the success rate, each criterion's rate, and the mean steps, tokens and
seconds per task, with every task's outcome.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import re
import socket
import statistics
import subprocess
import sys
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASTRO = ROOT / "examples" / "agents" / "astro"
MAX_STEPS = 4
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass
class Outcome:
    question: str
    expected: float
    answer: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)  # name, arguments, error
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    right_tool: bool = False
    valid_arguments: bool = False
    answer_ok: bool = False
    failure: str | None = None  # the run itself failed (an exception)

    @property
    def success(self) -> bool:
        return self.right_tool and self.valid_arguments and self.answer_ok


def load_tools() -> Any:
    spec = importlib.util.spec_from_file_location("astro_tools", ASTRO / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYSTEM: str = load_tools().SYSTEM  # the prompt make_train.py's rows were written with


def load_tasks(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (ASTRO / "tasks.jsonl").read_text().splitlines() if line]
    return [row for row in rows if row["split"] == split]


def numbers_in(text: str) -> list[float]:
    found = []
    for match in _NUMBER.findall(text):
        try:
            found.append(float(match.replace(",", "")))
        except ValueError:
            continue
    return found


def score(outcome: Outcome, task: dict[str, Any]) -> Outcome:
    mine = [call for call in outcome.calls if call["name"] == task["tool"]]
    outcome.right_tool = bool(mine)
    outcome.valid_arguments = any(call["error"] is None for call in mine)
    tolerance = task["tolerance"] * abs(task["answer"])
    outcome.answer_ok = any(
        abs(n - task["answer"]) <= tolerance for n in numbers_in(outcome.answer)
    )
    return outcome


# ---- the setups ---------------------------------------------------------------------------
def run_llmkit(model: Any, tools: list[Any], task: dict[str, Any]) -> Outcome:
    import llmkit

    outcome = Outcome(task["question"], task["answer"])
    started = time.perf_counter()
    agent = llmkit.Agent(model, tools=tools, system=SYSTEM, max_steps=MAX_STEPS)
    result = agent.run(task["question"])
    outcome.seconds = time.perf_counter() - started
    outcome.answer, outcome.steps, outcome.tokens = result.answer, len(result.steps), result.tokens
    outcome.calls = [
        {"name": s.tool, "arguments": s.arguments, "error": s.error}
        for s in result.steps
        if s.tool is not None
    ]
    return outcome


def run_plain(model: Any, tools: list[Any], task: dict[str, Any]) -> Outcome:
    """The same model, the tools in the prompt, no grammar: calls are whatever the text holds."""
    from llmkit.agent.functions import ToolError, as_tool, call_tool, coerce_arguments
    from llmkit.chat.tools import model_tool_syntax, parse_tool_calls, template_messages

    made = {tool.name: tool for tool in map(as_tool, tools)}
    specs = [tool.spec() for tool in made.values()]
    native = model_tool_syntax(model).native
    note = "" if native else "\n\n" + plain_tool_note(specs)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM + note},
        {"role": "user", "content": task["question"]},
    ]
    outcome = Outcome(task["question"], task["answer"])
    started = time.perf_counter()
    for _ in range(MAX_STEPS + 1):
        ids = model.prompt_ids(template_messages(messages, native), tools=specs if native else None)
        stream = model.stream_ids(ids, model.params(temperature=0.0, max_tokens=128))
        for _piece in stream:
            pass
        assert stream.result is not None
        usage = stream.result.usage
        outcome.tokens += usage.prompt_tokens - usage.cached_prompt_tokens + usage.completion_tokens
        outcome.steps += 1
        text = stream.result.text
        _, calls = parse_tool_calls(text)
        if not calls:
            outcome.answer = text.strip()
            break
        messages.append({"role": "assistant", "content": text.strip()})
        for call in calls:
            error, result = None, ""
            try:
                if call.name not in made:
                    raise ToolError(f"There is no tool named {call.name}.")
                result = call_tool(
                    made[call.name], coerce_arguments(made[call.name], call.arguments)
                )
            except ToolError as failed:
                error = str(failed)
            outcome.calls.append({"name": call.name, "arguments": call.arguments, "error": error})
            content = result if error is None else f"Error: {error}"
            messages.append({"role": "tool", "name": call.name, "content": content})
    outcome.seconds = time.perf_counter() - started
    return outcome


def plain_tool_note(specs: list[dict[str, Any]]) -> str:
    from llmkit.chat.tools import tool_system_message

    return tool_system_message(specs) + "\nWhen you know the answer, reply with it in plain text."


class Server:
    """`llmkit serve MODEL` on a free loopback port, for the OpenAI-API baseline."""

    def __init__(self, model: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        env_path = str(ROOT / "src")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmkit", "serve", model, "--port", str(self.port)],
            env={**_environ(), "PYTHONPATH": env_path},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}/v1"
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.close()
        raise SystemExit("llmkit serve did not start within 120 s")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def run_smolagents(
    server: Server, model_name: str, tools: list[Any], task: dict[str, Any]
) -> Outcome:
    from smolagents import OpenAIServerModel, ToolCallingAgent
    from smolagents import tool as smol_tool

    calls: list[dict[str, Any]] = []

    def recorded(function: Any) -> Any:
        # smolagents reads the name, hints and docstring; the wrapper records each call.
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            entry = {"name": function.__name__, "arguments": kwargs, "error": None}
            calls.append(entry)
            try:
                return function(*args, **kwargs)
            except Exception as error:
                entry["error"] = f"{type(error).__name__}: {error}"
                raise

        wrapper.__name__, wrapper.__doc__ = function.__name__, function.__doc__
        wrapper.__annotations__ = typing.get_type_hints(function)
        wrapper.__signature__ = inspect.signature(function, eval_str=True)  # type: ignore[attr-defined]
        return smol_tool(wrapper)

    model = OpenAIServerModel(
        model_id=model_name, api_base=server.url, api_key="none", temperature=0.0, max_tokens=200
    )
    agent = ToolCallingAgent(
        tools=[recorded(f) for f in tools],
        model=model,
        max_steps=MAX_STEPS,
        instructions=SYSTEM,
        verbosity_level=0,
    )
    outcome = Outcome(task["question"], task["answer"])
    started = time.perf_counter()
    try:
        outcome.answer = str(agent.run(task["question"]))
    except Exception as error:  # the baseline's own failure is part of what is measured
        outcome.failure = f"{type(error).__name__}: {str(error)[:200]}"
    outcome.seconds = time.perf_counter() - started
    outcome.calls = calls
    steps = [step for step in agent.memory.steps if type(step).__name__ == "ActionStep"]
    outcome.steps = len(steps)
    for step in steps:
        usage = getattr(step, "token_usage", None)
        if usage is not None:
            outcome.tokens += int(usage.input_tokens) + int(usage.output_tokens)
    return outcome


# ---- the report ---------------------------------------------------------------------------
def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    count = len(outcomes)

    def rate(values: list[bool]) -> float:
        return round(sum(values) / count, 3)

    return {
        "tasks": count,
        "success": rate([o.success for o in outcomes]),
        "right_tool": rate([o.right_tool for o in outcomes]),
        "valid_arguments": rate([o.valid_arguments for o in outcomes]),
        "answer_within_tolerance": rate([o.answer_ok for o in outcomes]),
        "steps_per_task": round(statistics.mean(o.steps for o in outcomes), 2),
        "tokens_per_task": round(statistics.mean(o.tokens for o in outcomes), 1),
        "seconds_per_task": round(statistics.mean(o.seconds for o in outcomes), 2),
        "runs": [asdict(o) | {"success": o.success} for o in outcomes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="model name or GGUF path")
    parser.add_argument("--setups", default="llmkit,plain,smolagents")
    parser.add_argument("--split", default="heldout", choices=["heldout", "paraphrase", "train"])
    parser.add_argument("--limit", type=int, default=0, help="at most this many tasks (0: all)")
    parser.add_argument("--label", default="", help="a name for this model in the report")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import llmkit

    tools = load_tools().TOOLS
    tasks = load_tasks(args.split)[: args.limit or None]
    setups = [name.strip() for name in args.setups.split(",") if name.strip()]
    report: dict[str, Any] = {"model": args.label or args.model, "split": args.split}
    model = llmkit.load(args.model)
    try:
        for setup in setups:
            if setup == "smolagents":
                continue
            run = run_llmkit if setup == "llmkit" else run_plain
            outcomes = [score(run(model, tools, task), task) for task in tasks]
            report[setup] = summary(outcomes)
            print(f"{setup}: {report[setup]['success']:.0%} success", file=sys.stderr)
    finally:
        model.close()
    if "smolagents" in setups:
        server = Server(args.model)
        try:
            name = Path(args.model).stem if args.model.endswith(".gguf") else args.model
            outcomes = [score(run_smolagents(server, name, tools, t), t) for t in tasks]
        finally:
            server.close()
        report["smolagents"] = summary(outcomes)
        print(f"smolagents: {report['smolagents']['success']:.0%} success", file=sys.stderr)
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
