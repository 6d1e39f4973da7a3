"""Grammars (JSON schema, Lark, GBNF) checked before use, then followed over a small fake vocabulary."""

from __future__ import annotations

import json
import time

import jsonschema
import numpy as np
import pytest

from llmkit.engines.base import TokenizerFacts
from llmkit.errors import InvalidParameterError
from llmkit.generation.constraints import (
    MAX_REPEAT,
    Grammar,
    GrammarConstraint,
    bounded_integers,
    constraint_factory,
    json_rule,
)

END = b"<|end|>"


class FakeVocabulary:
    """An engine's vocabulary side: multi-character tokens first, so that "the first allowed token"
    prefers them, then the closing characters (so strings and arrays end), then the rest of
    printable ASCII, with the space last (so a walk never pads)."""

    def __init__(self) -> None:
        multi = [b'{"', b'":', b"true", b"false", b"null", b'", "', b"ab"]
        closing = [b'"', b"]", b"}"]
        rest = [bytes([c]) for c in range(33, 127) if bytes([c]) not in closing]
        self.tokens = [END, b"<s>", *multi, *closing, *rest, b" ", b"\n"]
        self.tokenizer_facts = TokenizerFacts(
            vocab_size=len(self.tokens) + 3,  # logits wider than the tokenizer, as in some models
            bos_id=1,
            eos_id=0,
            end_of_generation_ids=frozenset({0}),
            add_bos=False,
        )

    def token_bytes(self, token_id: int) -> bytes:
        return self.tokens[token_id]  # IndexError past the end, like a padded vocabulary

    def tokenize(self, text: str) -> list[int]:
        return [self.tokens.index(bytes([c])) for c in text.encode()]


@pytest.fixture(scope="module")
def vocab() -> FakeVocabulary:
    return FakeVocabulary()


def walk(constraint: GrammarConstraint, vocab: FakeVocabulary, limit: int = 2000) -> bytes:
    """Always take the first allowed token, until only the end of text is left."""
    out = []
    for _ in range(limit):
        allowed = constraint.allowed()
        assert allowed.dtype == bool and allowed.shape == (vocab.tokenizer_facts.vocab_size,)
        token = int(np.flatnonzero(allowed)[0])
        if token == 0:
            return b"".join(out)
        constraint.accept(token)
        out.append(vocab.tokens[token])
    raise AssertionError("the walk did not end")


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


HOSTILE = {
    "long string": ({"type": "string", "maxLength": 20000}, "maxLength is 20,000; at most 4,096"),
    "long array": (
        {"type": "array", "items": {"type": "integer"}, "maxItems": 20000},
        "maxItems is 20,000",
    ),
    "tool parameter": (
        {"type": "object", "properties": {"xs": {"type": "array", "maxItems": 20000}}},
        "maxItems is 20,000",
    ),
    "deep nesting": (nested(900), "nests deeper than 64 levels"),
    "huge enum": ({"enum": list(range(100_000))}, "enum has 100,000 values; at most 1,024"),
    "long enum strings": (
        {"enum": ["x" * 1000 for _ in range(100)]},
        "bytes; at most 65,536 are allowed",
    ),
    "regex repetition": ({"type": "string", "pattern": "^a{20000}$"}, "20,000 times"),
    "min length": ({"type": "string", "minLength": 10**9}, "minLength is 1,000,000,000"),
    "not an object": (["type", "string"], "must be a JSON object"),
    "a string": ("json", "must be a JSON object"),
    "NaN": ({"type": "number", "maximum": float("nan")}, "only plain JSON values"),
    "unknown type": ({"type": "frob"}, "not supported: Invalid type: frob"),
    "dangling $ref": ({"$ref": "#/$defs/missing"}, "not supported"),
    "bad keyword value": ({"type": "number", "minimum": "zero"}, "not supported"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_schemas_are_refused_quickly_in_one_sentence(name: str) -> None:
    schema, expected = HOSTILE[name]
    started = time.perf_counter()
    with pytest.raises(InvalidParameterError) as caught:
        Grammar.from_json_schema(schema)
    assert time.perf_counter() - started < 2.0  # a bound on the work, not a speed figure
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message and len(message) < 300 and message.endswith(".")


@pytest.mark.parametrize("name", ["long string", "long array", "deep nesting", "huge enum"])
def test_an_embedded_schema_refuses_hostile_schemas_too(name: str) -> None:
    with pytest.raises(InvalidParameterError, match=HOSTILE[name][1]):
        json_rule(HOSTILE[name][0])


def test_bounds_leave_room_for_ordinary_schemas(vocab: FakeVocabulary) -> None:
    at_bound = {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_REPEAT}
    Grammar.from_json_schema(at_bound)
    Grammar.from_json_schema(nested(25))
    Grammar.from_json_schema({"enum": list(range(1024))})


def test_an_error_never_quotes_the_grammar() -> None:
    secret = "s3cr3t_rule_name"
    with pytest.raises(InvalidParameterError) as caught:
        Grammar.from_lark(f"start: {secret}_other\n{secret}: /a/\n" + "// padding\n" * 50)
    assert "padding" not in str(caught.value)
    assert repr(Grammar.from_lark("start: /a+/")).startswith("Grammar(kind='lark'")


SCHEMAS = [
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 3, "maxLength": 10},
            "ok": {"type": "boolean"},
            "scores": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "kind": {"enum": ["cat", "dog"]},
            "none": {"type": "null"},
        },
        "required": ["name", "ok", "scores", "kind", "none"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "number"}, "tag": {"type": "string"}},
                    "required": ["x", "tag"],
                },
                "minItems": 1,
            }
        },
        "required": ["items"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_first_allowed_walk_gives_json_valid_against_the_schema(
    schema: dict, vocab: FakeVocabulary
) -> None:
    make = constraint_factory(Grammar.from_json_schema(schema), vocab)
    constraint = make()
    assert not constraint.finished
    text = walk(constraint, vocab)
    jsonschema.validate(json.loads(text), schema)
    assert constraint.finished
    # Once complete, only the end of text may follow, and accepting it changes nothing.
    assert np.flatnonzero(constraint.allowed()).tolist() == [0]
    constraint.accept(0)
    assert constraint.finished
    # Each constraint from a factory starts afresh.
    assert walk(make(), vocab) == text


def test_any_object_accepts_a_written_object_then_only_the_end(vocab: FakeVocabulary) -> None:
    constraint = constraint_factory(Grammar.from_json_schema({"type": "object"}), vocab)()
    for token in vocab.tokenize('{"k": [1, "x", {"y": null}]}'):
        assert constraint.allowed()[token]
        constraint.accept(token)
    assert constraint.finished
    assert np.flatnonzero(constraint.allowed()).tolist() == [0]


def test_a_disallowed_token_is_refused(vocab: FakeVocabulary) -> None:
    constraint = constraint_factory(Grammar.from_json_schema({"type": "object"}), vocab)()
    allowed = constraint.allowed()
    letter = vocab.tokens.index(b"x")
    assert not allowed[letter] and not allowed[0]  # neither text outside JSON nor the end
    assert not allowed[1]  # a special token is never spelled out by a grammar
    assert not allowed[len(vocab.tokens) :].any()  # padding rows past the tokenizer
    with pytest.raises(InvalidParameterError, match="not allowed"):
        constraint.accept(letter)


def test_end_of_text_is_allowed_once_a_lark_text_is_complete(vocab: FakeVocabulary) -> None:
    constraint = constraint_factory(Grammar.from_lark('start: "x" /[0-9]+/'), vocab)()
    assert np.flatnonzero(constraint.allowed()).tolist() == [vocab.tokens.index(b"x")]
    for token in vocab.tokenize("x42"):
        constraint.accept(token)
    allowed = constraint.allowed()
    assert allowed[0] and allowed[vocab.tokens.index(b"7")]  # may end, or go on
    assert not constraint.finished and constraint.accepting
    constraint.accept(0)
    assert constraint.finished


def test_mask_logits_leaves_only_allowed_tokens(vocab: FakeVocabulary) -> None:
    constraint = constraint_factory(Grammar.from_lark('start: "ab" | "b"'), vocab)()
    logits = np.zeros(vocab.tokenizer_facts.vocab_size, dtype=np.float32)
    constraint.mask_logits(logits)
    finite = np.flatnonzero(np.isfinite(logits)).tolist()
    expected = sorted(vocab.tokens.index(token) for token in (b"ab", b"a", b"b"))
    assert finite == expected


def test_gbnf_grammar_is_followed(vocab: FakeVocabulary) -> None:
    gbnf = 'root ::= "{" pair ("," pair)* "}"\npair ::= [a-c] "=" [0-9]\n'
    constraint = constraint_factory(Grammar.from_gbnf(gbnf), vocab)()
    assert walk(constraint, vocab) == b"{a=0}"


def test_a_schema_embedded_in_lark_is_followed(vocab: FakeVocabulary) -> None:
    schema = SCHEMAS[1]
    grammar = Grammar.from_lark(f'start: "<" call ">"\ncall: {json_rule(schema)}\n')
    text = walk(constraint_factory(grammar, vocab)(), vocab)
    assert text.startswith(b"<") and text.endswith(b">")
    jsonschema.validate(json.loads(text[1:-1]), schema)


@pytest.mark.parametrize(
    ("make", "text", "expected"),
    [
        (Grammar.from_gbnf, 'root ::= "a" missing', "GBNF grammar is invalid: Rule 'missing'"),
        (Grammar.from_gbnf, "root ::= [a-", "GBNF grammar is invalid"),
        (Grammar.from_gbnf, 'root ::= "a"{20000}', "20,000 times"),
        (Grammar.from_gbnf, "", "must be non-empty text"),
        (Grammar.from_lark, "start: (", "Lark grammar is invalid"),
        (Grammar.from_lark, 'start: "a"{5000,}', "5,000 times"),
        (Grammar.from_lark, "start: /a/\n" + "x: /b/\n" * 10_000, "at most 65,536"),
    ],
)
def test_bad_grammars_are_one_sentence(make, text: str, expected: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        make(text)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_the_vocabulary_is_built_once_per_engine(vocab: FakeVocabulary) -> None:
    calls = []

    class Counting(FakeVocabulary):
        def token_bytes(self, token_id: int) -> bytes:
            calls.append(token_id)
            return super().token_bytes(token_id)

    engine = Counting()
    grammar = Grammar.from_json_schema({"type": "object"})
    constraint_factory(grammar, engine)
    first = len(calls)
    constraint_factory(Grammar.from_lark("start: /a/"), engine)
    assert first == engine.tokenizer_facts.vocab_size and len(calls) == first


def test_server_wire_helpers_stay_importable() -> None:
    from llmkit.server.grammar import (
        ANY_OBJECT_SCHEMA,
        ollama_format_schema,
        response_format_schema,
    )

    assert ollama_format_schema("json") == ANY_OBJECT_SCHEMA
    assert response_format_schema({"type": "json_object"}) == ANY_OBJECT_SCHEMA


TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


def _follow(grammar: Grammar, vocab: FakeVocabulary, text: str) -> GrammarConstraint:
    constraint = constraint_factory(grammar, vocab)()
    for token in vocab.tokenize(text):
        assert constraint.allowed()[token], text
        constraint.accept(token)
    return constraint


def test_tool_call_grammars_admit_calls_and_only_calls(vocab: FakeVocabulary) -> None:
    from llmkit.chat.tools import NO_TOOL_SYNTAX, ToolSyntax, plan_tools

    call = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    required = plan_tools([TOOL], "required", NO_TOOL_SYNTAX).grammar
    assert _follow(required, vocab, call).finished
    walked = json.loads(walk(constraint_factory(required, vocab)(), vocab))
    assert walked["name"] == "add" and set(walked["arguments"]) >= {"a", "b"}
    wrong = constraint_factory(required, vocab)()
    for token in vocab.tokenize('{"name": "'):
        wrong.accept(token)
    assert not wrong.allowed()[vocab.tokens.index(b"x")]  # only the tool's own name

    tagged = plan_tools([TOOL], "required", ToolSyntax(native=True, tagged=True)).grammar
    block = f"<tool_call>\n{call}\n</tool_call>"
    assert _follow(tagged, vocab, block).accepting  # one call, or more after a newline
    assert _follow(tagged, vocab, f"{block}\n{block}").accepting
    after = _follow(tagged, vocab, block)
    assert not after.allowed()[vocab.tokens.index(b"x")]  # no text after a call

    auto = plan_tools([TOOL], "auto", NO_TOOL_SYNTAX).grammar
    assert _follow(auto, vocab, call).allowed()[0]
    assert _follow(auto, vocab, "It is 3.").allowed()[0]  # or a plain answer
    text_start = constraint_factory(auto, vocab)()
    assert text_start.allowed()[vocab.tokens.index(b"I")]


@pytest.mark.parametrize("engine_name", ["llamacpp", "transformers"])
def test_both_engines_samplers_follow_a_schema(tiny_gguf, engine_name: str) -> None:
    """A random tiny model, greedy, through each engine's own sampler: the reply is valid JSON."""
    import llmkit
    from llmkit.engines.base import BatchItem
    from llmkit.params import SamplingParams

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
        "required": ["ok", "n"],
        "additionalProperties": False,
    }
    with llmkit.load(str(tiny_gguf), engine=engine_name, context_length=256) as model:
        engine = model.engine
        ends = engine.tokenizer_facts.end_of_generation_ids
        make = constraint_factory(Grammar.from_json_schema(schema), engine)
        context = engine.context
        prompt = engine.tokenize("the answer is")
        context.keep_prefix(0, 0)
        context.decode([BatchItem(0, prompt)])
        constraint = make()
        sampler = context.new_sampler(SamplingParams(temperature=0.0), prompt, constraint)
        out: list[int] = []
        for _ in range(200):
            token = sampler.sample()
            if token in ends:
                break
            out.append(token)
            context.decode([BatchItem(0, [token])])
        text = b"".join(engine.token_bytes(token) for token in out)
    assert constraint.finished
    jsonschema.validate(json.loads(text), schema)


def test_an_integer_without_bounds_cannot_run_on_forever(vocab: FakeVocabulary) -> None:
    """A model that always prefers another digit still has to stop after sixteen."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    constraint = constraint_factory(Grammar.from_json_schema(schema), vocab)()
    for token in vocab.tokenize('{"n": '):
        constraint.accept(token)
    nine = vocab.tokenize("9")[0]
    digits = 0
    while constraint.allowed()[nine]:
        constraint.accept(nine)
        digits += 1
        assert digits <= 16
    assert digits == 16
    for token in vocab.tokenize("}"):
        assert constraint.allowed()[token]
        constraint.accept(token)
    assert constraint.finished


def test_bounds_the_user_gave_and_literal_values_are_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0},
            "kind": {"const": {"type": "integer"}},
            "maybe": {"type": ["integer", "null"]},
        },
    }
    bounded = bounded_integers(schema)
    assert bounded["properties"]["age"] == {"type": "integer", "minimum": 0, "maximum": 10**16 - 1}
    assert bounded["properties"]["kind"] == {"const": {"type": "integer"}}
    assert bounded["properties"]["maybe"]["minimum"] == -(10**16 - 1)
    assert schema["properties"]["age"] == {"type": "integer", "minimum": 0}  # not mutated
