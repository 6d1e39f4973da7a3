r"""Training conversations for the astronomer's agent, made from the tools themselves.

    python examples/agents/astro/make_train.py --count 215 --per-row 6 --out astro_train.jsonl
    llmkit finetune smollm2 --data astro_train.jsonl --out smollm2-astro --export adapter \
        --epochs 2 --batch-size 1 --lr 5e-4 --warmup-steps 3 --max-length 2048
    python benchmarks/agent_eval.py --setups llmkit --model smollm2-astro

The 25 train rows of tasks.jsonl are too few to teach a 135M model which arguments a question
asks for, so this writes more the way a user would: sample arguments, run the real tool for its
result, and write the question from templates. Every row is the conversation `llmkit.Agent` has
with a model that gets it right (`pairs_to_conversations`: the system prompt and tool note the
agent sends, the call, the tool's result, a `final_answer` call), so the fine-tune is trained on
the prompt it is run with.

The test tasks stay unseen: no generated row names a body a held-out or paraphrase task asks
about, or uses a number that is one of their arguments. The train split's own rows come first,
written the same way. Seeded: the same arguments give the same file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# The units as questions write them: (plural forms, singular forms).
UNIT_WORDS: dict[str, tuple[list[str], list[str]]] = {
    "km": (["km", "kilometres", "kilometers"], ["km", "kilometre", "kilometer"]),
    "AU": (["AU", "astronomical units"], ["AU", "astronomical unit"]),
    "ly": (["light-years", "ly", "light years"], ["light-year", "ly", "light year"]),
    "pc": (["parsecs", "pc"], ["parsec", "pc"]),
}
# A plausible range of values for each unit, as powers of ten.
UNIT_RANGE = {"km": (4, 11), "AU": (-1, 6), "ly": (-1, 4), "pc": (-1, 4)}
PLANETS = {"mercury", "venus", "earth", "mars", "jupiter", "saturn", "uranus", "neptune"}

CONVERT = [
    "Convert {value} {source} to {target}.",
    "How many {target} is {value} {source}?",
    "How many {target} are in {value} {source}?",
    "Express {value} {source} in {target}.",
    "What is {value} {source} in {target}?",
    "{value} {source} is how many {target}?",
]
DISTANCE = [
    "How far is {body} in {unit}?",
    "What is the distance to {body} in {unit}?",
    "How far away is {body}, in {unit}?",
    "Give the distance to {body} in {unit}.",
]
PLANET_DISTANCE = [
    "How far is {body} from the Sun in {unit}?",
    "What is the mean distance of {body} from the Sun in {unit}?",
]
RADIUS = [
    "What is the radius of {body} in {unit}?",
    "What is {body}'s radius in {unit}?",
    "How big is {body}? Give its radius in {unit}.",
    "Radius of {body} in {unit}?",
]
ANGULAR = [
    "What is the angular size in arcseconds of an object {d} km across at {r} km?",
    "What angular size in arcseconds does a {d} km wide object have from {r} km away?",
    "Angular size in arcseconds of a {d} km asteroid at {r} km?",
    "What is the angular size in arcseconds of a {d} km object at {r} km?",
    "How many arcseconds across is a {d} km moon seen from {r} km?",
]


def load_tools() -> Any:
    spec = importlib.util.spec_from_file_location("astro_tools", HERE / "tools.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_tasks() -> list[dict[str, Any]]:
    lines = (HERE / "tasks.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def unseen(heldout: list[dict[str, Any]]) -> tuple[set[str], set[float]]:
    """The bodies and the numbers the held-out tasks use: no generated row may use them."""
    bodies, numbers = set(), set()
    for task in heldout:
        for value in task["arguments"].values():
            if isinstance(value, str) and task["tool"] in ("distance_to", "radius_of"):
                if value not in UNIT_WORDS:
                    bodies.add(value.lower())
            elif isinstance(value, int | float):
                numbers.add(float(value))
    return bodies, numbers


def number(rng: random.Random, low: int, high: int, banned: set[float]) -> float | int:
    """A value of one to three significant digits between 10**low and 10**high, not banned."""
    while True:
        digits = rng.choice([1, 1, 2, 2, 3])
        mantissa = rng.randint(10 ** (digits - 1), 10**digits - 1)
        exponent = rng.randint(low, high) - (digits - 1)
        value = mantissa * 10.0**exponent
        value = float(f"{value:.{digits}g}")
        result = int(value) if value.is_integer() else value
        if float(result) not in banned:
            return result


def unit_word(rng: random.Random, unit: str, value: float | int = 2) -> str:
    plural, singular = UNIT_WORDS[unit]
    return rng.choice(singular if value == 1 else plural)


def display(body: str) -> str:
    """The body's name as a question writes it ("the Sun", "Alpha Centauri A")."""
    if body == "sun":
        return "the Sun"
    return " ".join(word.upper() if len(word) == 1 else word.capitalize() for word in body.split())


Pair = dict[str, Any]


def convert_pair(rng: random.Random, tools: Any, bodies: set[str], banned: set[float]) -> Pair:
    source, target = rng.sample(sorted(UNIT_WORDS), 2)
    value = number(rng, *UNIT_RANGE[source], banned)
    question = rng.choice(CONVERT).format(
        value=value, source=unit_word(rng, source, value), target=unit_word(rng, target)
    )
    arguments = {"value": value, "from_unit": source, "to_unit": target}
    return {"question": question, "tool": "convert_distance", "arguments": arguments}


def distance_pair(rng: random.Random, tools: Any, bodies: set[str], banned: set[float]) -> Pair:
    body = rng.choice(sorted(set(tools.BODIES) - bodies))
    near = tools.BODIES[body][1] in ("AU", "km")
    # Mostly the units an astronomer asks for: AU or km in the solar system, ly or pc beyond.
    unit = rng.choice(
        ["AU", "AU", "km", "km", "ly", "pc"] if near else ["ly", "ly", "pc", "pc", "AU", "km"]
    )
    templates = DISTANCE + (PLANET_DISTANCE if body in PLANETS else [])
    question = rng.choice(templates).format(body=display(body), unit=unit_word(rng, unit))
    question = question[0].upper() + question[1:]
    arguments = {"body": display(body).removeprefix("the "), "unit": unit}
    return {"question": question, "tool": "distance_to", "arguments": arguments}


def radius_pair(rng: random.Random, tools: Any, bodies: set[str], banned: set[float]) -> Pair:
    body = rng.choice(sorted(set(tools.BODIES) - bodies))
    question = rng.choice(RADIUS).format(body=display(body), unit=unit_word(rng, "km"))
    question = question[0].upper() + question[1:]
    arguments = {"body": display(body).removeprefix("the ")}
    return {"question": question, "tool": "radius_of", "arguments": arguments}


def angular_pair(rng: random.Random, tools: Any, bodies: set[str], banned: set[float]) -> Pair:
    diameter = number(rng, 2, 6, banned)
    distance = number(rng, 5, 10, banned | {float(diameter)})
    question = rng.choice(ANGULAR).format(d=diameter, r=distance)
    arguments = {"diameter_km": diameter, "distance_km": distance}
    return {"question": question, "tool": "angular_size", "arguments": arguments}


# Conversions get the largest share: choosing from_unit and to_unit is where the base model fails.
MAKERS: list[tuple[Callable[..., Pair], int]] = [
    (convert_pair, 4),
    (distance_pair, 3),
    (radius_pair, 1),
    (angular_pair, 2),
]
UNIT_OF_ANSWER = {"radius_of": "km", "angular_size": "arcseconds"}


def answer(pair: Pair, result: str) -> str:
    """The final answer: the tool's result with its unit, as the system prompt asks."""
    arguments = pair["arguments"]
    unit = UNIT_OF_ANSWER.get(pair["tool"]) or arguments.get("to_unit") or arguments["unit"]
    return f"{result} {unit}"


def generate(count: int, seed: int) -> list[Pair]:
    tools = load_tools()
    tasks = load_tasks()
    # Both test splits stay unseen: held-out, and its paraphrases in words no template uses.
    tests = [t for t in tasks if t["split"] != "train"]
    bodies, banned = unseen(tests)
    heldout_questions = {t["question"] for t in tests}
    rng = random.Random(seed)
    makers = [maker for maker, weight in MAKERS for _ in range(weight)]
    pairs: list[Pair] = []
    seen = {t["question"] for t in tasks}
    while len(pairs) < count:
        pair = rng.choice(makers)(rng, tools, bodies, banned)
        if pair["question"] in seen:
            continue
        assert pair["question"] not in heldout_questions
        seen.add(pair["question"])
        pairs.append(pair)
    return pairs


def chained(rows: list[dict[str, Any]], per_row: int) -> list[dict[str, Any]]:
    """Rows of `per_row` questions each, asked one after another in one chat.

    A row's first question is exactly the conversation the agent has; the later ones add the
    earlier questions as history. Every row pays for the ~700-token system prompt (the tools'
    schemas) once, so on a slow CPU this teaches several calls for the price of about two.
    """
    if per_row <= 1:
        return rows
    joined = []
    for start in range(0, len(rows), per_row):
        group = rows[start : start + per_row]
        messages = [*group[0]["messages"]]
        for row in group[1:]:
            messages.extend(row["messages"][1:])  # the same system message is not repeated
        joined.append({"messages": messages, "tools": group[0]["tools"]})
    return joined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="generated rows (besides train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("astro_train.jsonl"))
    parser.add_argument("--no-train-split", action="store_true", help="generated rows only")
    parser.add_argument(
        "--per-row", type=int, default=1, help="questions in one conversation (1: as the agent)"
    )
    args = parser.parse_args()
    from llmkit.agent.training import pairs_to_conversations

    tools = load_tools()
    train = [] if args.no_train_split else [t for t in load_tasks() if t["split"] == "train"]
    pairs = [*train, *generate(args.count, args.seed)]
    rows = pairs_to_conversations(pairs, tools.TOOLS, system=tools.SYSTEM, answer=answer)
    # Shuffled, so that every epoch's batches mix the tools (the train split is sorted by tool).
    random.Random(args.seed).shuffle(rows)
    rows = chained(rows, args.per_row)
    with args.out.open("w") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print(
        f"{len(pairs)} questions ({len(train)} from the train split) in {len(rows)} rows "
        f"-> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
