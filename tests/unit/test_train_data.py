"""Training data validation and loss masks (no model weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers.tiny_model import CHATML

from llmkit.train.data import DataError, Example, read_jsonl, split_for_eval
from llmkit.train.masks import TemplateTokens, mask_segments, tokenize_dataset, tokenize_example

LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}<|start|>{{ m['role'] }}\n\n{{ m['content'] }}<|eot|>"
    "{% endfor %}{% if add_generation_prompt %}<|start|>assistant\n\n{% endif %}"
)


def write_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def char_tokenize(text: str) -> list[int]:
    """One token per character, with <|...|> specials as single tokens (enough to check masks)."""
    ids, index = [], 0
    while index < len(text):
        if text.startswith("<|", index) and "|>" in text[index:]:
            end = text.index("|>", index) + 2
            ids.append(1000 + len(text[index:end]))
            index = end
        else:
            ids.append(ord(text[index]))
            index += 1
    return ids


def chat(*turns: str) -> Example:
    roles = ["user", "assistant"]
    return Example("t:1", tuple({"role": roles[i % 2], "content": c} for i, c in enumerate(turns)))


def test_all_formats_are_read(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "d.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            {"prompt": "p", "completion": "c"},
            {"text": "plain"},
            "",
        ],
    )
    examples = read_jsonl(path)
    assert [len(e.messages) for e in examples] == [3, 2, 0]
    assert examples[2].text == "plain"
    assert examples[1].source == f"{path}:2"


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write_rows(
        tmp_path / "d.jsonl",
        [
            "{not json",
            {"messages": [{"role": "robot", "content": "x"}]},
            {"foo": 1},
            {"prompt": "p"},
        ],
    )
    with pytest.raises(DataError) as error:
        read_jsonl(path)
    message = str(error.value)
    assert "4 problems" in message and "nothing was started" in message
    for line in (1, 2, 3, 4):
        assert f"{path}:{line}:" in message
    assert "role 'robot'" in message


def test_empty_file_and_no_assistant_turns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has no rows"):
        read_jsonl(write_rows(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="no assistant turns"):
        read_jsonl(
            write_rows(tmp_path / "u.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
        )
    with pytest.raises(DataError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_eval_split_is_seeded_and_disjoint() -> None:
    examples = [Example(f"f:{i}", text=str(i)) for i in range(10)]
    train, held = split_for_eval(examples, 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8
    assert split_for_eval(examples, 0.2, seed=1)[1] == held
    assert not {e.source for e in train} & {e.source for e in held}


@pytest.mark.parametrize(
    ("template", "end_of_turn", "answer_tail"),
    [(CHATML, "<|im_end|>", "<|im_end|>"), (LLAMA3_LIKE, "<|eot|>", "<|eot|>")],
)
def test_mask_covers_answers_and_end_of_turn_only(
    template: str, end_of_turn: str, answer_tail: str
) -> None:
    tokens = TemplateTokens(template, bos_token="<|bos|>", end_of_turn=end_of_turn)
    example = chat("hello", "first answer", "again", "second answer")
    tokenized = tokenize_example(example, tokens, char_tokenize)
    runs = mask_segments(tokenized, lambda ids: "".join(chr(i) if i < 1000 else "§" for i in ids))
    trained = [text for text, is_trained in runs if is_trained]
    assert trained == ["first answer§", "second answer§"]  # § is the end-of-turn token
    untrained = "".join(text for text, is_trained in runs if not is_trained)
    assert "hello" in untrained and "again" in untrained and "assistant" in untrained


def test_template_without_end_token_trains_answer_without_trailing_whitespace() -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    tokenized = tokenize_example(chat("q", "the answer"), TemplateTokens(template), char_tokenize)
    runs = mask_segments(tokenized, lambda ids: "".join(map(chr, ids)))
    assert [t for t, trained in runs if trained] == ["the answer"]


def test_too_long_rows_are_truncated_or_dropped_and_reported() -> None:
    tokens = TemplateTokens(CHATML, end_of_turn="<|im_end|>")
    examples = [chat("q", "short"), Example("t:2", chat("q", "x" * 200).messages)]
    kept, report = tokenize_dataset(examples, tokens, char_tokenize, max_length=40)
    assert len(kept) == 2 and report.truncated == ["t:2"] and len(kept[1]) == 40
    kept, report = tokenize_dataset(examples, tokens, char_tokenize, max_length=40, too_long="drop")
    assert len(kept) == 1 and report.dropped == ["t:2"]
    assert "dropped" in (report.summary(40) or "")


def test_plain_text_rows_train_every_token_and_end_with_eos() -> None:
    tokens = TemplateTokens(None, eos_id=7, bos_id=5, add_bos=True)
    tokenized = tokenize_example(Example("t:1", text="abc"), tokens, char_tokenize)
    assert tokenized.input_ids == (5, 97, 98, 99, 7)
    assert tokenized.trained == (False, True, True, True, True)


def test_chat_rows_without_template_ask_for_one() -> None:
    with pytest.raises(DataError, match="--template"):
        tokenize_example(chat("q", "a"), TemplateTokens(None), char_tokenize)


def test_an_oversized_row_fails_fast_with_its_line(tmp_path: Path) -> None:
    import resource
    import time

    from llmkit.train.data import MAX_ROW_BYTES

    path = tmp_path / "huge.jsonl"
    good = json.dumps({"prompt": "hi", "completion": "hello"}) + "\n"
    with path.open("w") as handle:
        handle.write(good)
        # A 200 MB row, written in pieces: the reader must never hold it whole.
        handle.write('{"text": "')
        for _ in range(200):
            handle.write("x" * (1024 * 1024))
        handle.write('"}\n')
        handle.write(good)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    message = str(caught.value)
    assert f"{path}:2: the row is longer than {MAX_ROW_BYTES:,} bytes" in message
    assert "1 problem" in message and ":1:" not in message and ":3:" not in message
    assert time.perf_counter() - started < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50 * 1024  # KiB


def test_rows_up_to_the_bound_are_read(tmp_path: Path) -> None:
    from llmkit.train.data import MAX_ROW_BYTES

    row = {"text": ""}
    row["text"] = "y" * (MAX_ROW_BYTES - len(json.dumps(row)))
    path = write_rows(tmp_path / "edge.jsonl", [row, {"text": "short"}])
    assert len(json.dumps(row)) == MAX_ROW_BYTES
    examples = read_jsonl(path)
    assert [len(e.text or "") for e in examples] == [len(row["text"]), 5]
    row["text"] += "y"
    with pytest.raises(DataError, match=r"edge.jsonl:1: the row is longer"):
        read_jsonl(write_rows(tmp_path / "edge.jsonl", [row, {"text": "short"}]))


def test_a_row_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1.jsonl:2: not UTF-8"):
        read_jsonl(path)
