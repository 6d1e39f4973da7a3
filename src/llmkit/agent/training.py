"""Training conversations for your own tools, from (question → expected call) pairs.

Each pair becomes the conversation the agent loop would have had with a model that got it right:
the question, the call, the tool's real result, and a final_answer call that gives it, in the
same shape `llmkit agent --record` writes and `llmkit finetune` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from llmkit.agent.functions import ToolError, as_tool, call_tool, coerce_arguments
from llmkit.agent.loop import FINAL_ANSWER, FINAL_SPEC
from llmkit.chat.tools import tool_system_message


def pairs_to_conversations(
    pairs: Iterable[dict[str, Any]],
    tools: Sequence[Any],
    *,
    system: str | None = None,
    answer: Callable[[dict[str, Any], str], str] | None = None,
) -> list[dict[str, Any]]:
    """One `{"messages", "tools"}` row per pair `{"question", "tool", "arguments"}`.

    The tool is called for real, so the row holds the result the model will see. `answer(pair,
    result)` writes the final answer (default: the result itself). A pair whose call fails is a
    ToolError naming it, so a training set never teaches a call that does not work.
    """
    made = {tool.name: tool for tool in map(as_tool, tools)}
    specs = [*(tool.spec() for tool in made.values()), FINAL_SPEC]
    # As the loop opens a run for a model without tool syntax (a native template ignores it).
    note = tool_system_message(specs)
    opening = f"{system}\n\n{note}" if system else note
    rows = []
    for number, pair in enumerate(pairs, 1):
        name, question = pair.get("tool"), pair.get("question")
        if name not in made or not isinstance(question, str):
            raise ToolError(f"Pair {number} needs a 'question' and one of the tools: {list(made)}.")
        arguments = coerce_arguments(made[name], pair.get("arguments", {}))
        result = call_tool(made[name], arguments)
        final = answer(pair, result) if answer else result
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": opening},
                    {"role": "user", "content": question},
                    _call(f"call_{number}_1", name, arguments),
                    {
                        "role": "tool",
                        "tool_call_id": f"call_{number}_1",
                        "name": name,
                        "content": result,
                    },
                    _call(f"call_{number}_2", FINAL_ANSWER, {"answer": final}),
                ],
                "tools": specs,
            }
        )
    return rows


def _call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
