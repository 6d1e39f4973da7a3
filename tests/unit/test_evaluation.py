"""`llmkit eval`'s parts: continuation likelihoods, the lm-eval adapter, and the local tasks.

The fake engine here predicts, after every token, the next code point (its logits peak there),
so every log-probability has an exact value to check.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tests.helpers.fake_engine import FakeContext, FakeEngine

from llmkit.engines.base import BatchItem
from llmkit.errors import ContextOverflowError, InvalidParameterError, MissingExtraError
from llmkit.evaluation.likelihood import continuation_likelihood
from llmkit.evaluation.tasks import BUILTIN_TASKS, TASK_DIR, read_choice_file, resolve_tasks
from llmkit.generation.scoring import score
from llmkit.model import Model
from llmkit.store.store import ModelManifest

VOCAB = 256
PEAK = 5.0
END = 3
HIT = PEAK - math.log(math.exp(PEAK) + VOCAB - 1)  # log P(the expected next code point)
MISS = -math.log(math.exp(PEAK) + VOCAB - 1)  # log P(any other token)


class PeakContext(FakeContext):
    """Logits that peak at the code point after the row's token: 'a' predicts 'b'."""

    def decode(self, items: Sequence[BatchItem]) -> None:
        super().decode(items)
        self.rows = [
            token
            for item in items
            if item.want_logits
            for token in (item.tokens if item.all_logits else item.tokens[-1:])
        ]

    def logits(self, output: int = -1) -> np.ndarray:
        super().logits(output)  # the same row checks as the fake engine's
        row = np.zeros(VOCAB, dtype=np.float32)
        row[(self.rows[output] + 1) % VOCAB] = PEAK
        return row


def peak_engine(context_length: int = 64, script: Sequence[int] = (END,)) -> FakeEngine:
    engine = FakeEngine({END: b"<end>"}, list(script), context_length, end_of_generation=[END])
    engine._context = PeakContext(engine, 1, context_length)
    return engine


def fake_model(engine: FakeEngine) -> Model:
    manifest = ModelManifest("fake", "/nowhere.gguf", "gguf", "0" * 64, 1, "test", info={})
    return Model(manifest, engine)


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


# ---- continuation likelihoods --------------------------------------------------------------
def test_a_continuation_gets_the_sum_of_its_tokens_logprobs_and_greedy_when_expected() -> None:
    engine = peak_engine()
    found = continuation_likelihood(engine, ids("ab"), ids("cd"))  # b -> c, c -> d: both expected
    assert found.logprob == pytest.approx(2 * HIT) and found.greedy and found.cut == 0
    found = continuation_likelihood(engine, ids("ab"), ids("cx"))
    assert found.logprob == pytest.approx(HIT + MISS) and not found.greedy


def test_it_agrees_with_scoring_the_whole_text() -> None:
    engine = peak_engine()
    text = ids("abcxyzq")
    whole = score(engine, text).logprobs
    assert continuation_likelihood(engine, text[:3], text[3:]).logprob == pytest.approx(
        sum(whole[2:])
    )


def test_a_shared_context_stays_in_the_cache_between_answers() -> None:
    engine = peak_engine()
    context = ids("Question: which letter follows a?\nAnswer:")
    continuation_likelihood(engine, context, ids(" b"))
    engine.context.calls.clear()
    continuation_likelihood(engine, context, ids(" c"))
    # Only the context's last token (for its logits) and the answer's first are evaluated again.
    assert sum(len(item.tokens) for call in engine.context.calls for item in call) == 2


def test_a_long_context_loses_its_oldest_tokens_and_a_long_continuation_is_an_error() -> None:
    engine = peak_engine(context_length=8)
    found = continuation_likelihood(engine, ids("abcdefgh"), ids("ij"))
    assert found.cut == 1 and found.logprob == pytest.approx(2 * HIT)
    with pytest.raises(ContextOverflowError, match="does not fit the context window of 8"):
        continuation_likelihood(engine, ids("a"), ids("bcdefghijk"))


# ---- the lm-eval model ---------------------------------------------------------------------
@pytest.fixture
def adapter():
    pytest.importorskip("lm_eval")
    from llmkit.evaluation.adapter import LlmkitLM

    def make(engine: FakeEngine | None = None) -> LlmkitLM:
        return LlmkitLM(fake_model(engine or peak_engine()))

    return make


def request(*args: object) -> SimpleNamespace:
    return SimpleNamespace(args=args)


def test_loglikelihood_answers_in_the_order_asked(adapter) -> None:
    lm = adapter()
    answers = lm.loglikelihood([request("xa", "bc"), request("", "ab"), request("xa", "q")])
    assert answers[0] == (pytest.approx(2 * HIT), True)
    # An empty context is scored after the end-of-text token (3), which does not predict 'a'.
    assert answers[1] == (pytest.approx(MISS + HIT), False)
    assert answers[2] == (pytest.approx(MISS), False)


def test_trailing_spaces_of_the_context_belong_to_the_continuation(adapter) -> None:
    assert adapter().encode_pair("Answer: ", "Paris") == (ids("Answer:"), ids(" Paris"))


def test_rolling_loglikelihood_scores_every_token_once_across_windows(adapter) -> None:
    lm = adapter(peak_engine(context_length=4))
    text = "abcdefghij"
    (total,) = lm.loglikelihood_rolling([request(text)])
    # After the prefix token 'a' is unexpected; each later token follows its predecessor.
    assert total == pytest.approx(MISS + 9 * HIT)


def test_generate_until_stops_at_the_tasks_stop_string(adapter) -> None:
    lm = adapter(peak_engine(script=[*ids("Paris.\nQuestion"), END]))
    (answer,) = lm.generate_until([request("Answer:", {"until": ["\n"], "max_gen_toks": 32})])
    assert answer == "Paris."
    (short,) = lm.generate_until([request("Answer:", {"until": "\n", "max_gen_toks": 3})])
    assert short == "Par"


def test_progress_counts_every_request(adapter) -> None:
    lm = adapter()
    seen: list[tuple[int, int, str]] = []
    lm.progress = lambda done, total, kind: seen.append((done, total, kind))
    lm.loglikelihood([request("a", "b"), request("a", "c")])
    assert seen == [(1, 2, "loglikelihood"), (2, 2, "loglikelihood")]


def test_lm_eval_scores_a_multiple_choice_task_through_the_adapter(tmp_path: Path) -> None:
    pytest.importorskip("lm_eval")
    from llmkit.evaluation.runner import evaluate

    # Each choice follows "Answer:" and a space, after which the fake expects "!" (the next
    # code point): the choice "!" always wins.
    lines = [
        {"question": "one", "choices": ["!", "q"], "answer": 0},
        {"question": "two", "choices": ["q", "!"], "answer": 1},
        {"question": "three", "choices": ["!", "z"], "answer": 1},
    ]
    quiz = tmp_path / "quiz.jsonl"
    quiz.write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = fake_model(peak_engine(context_length=128))
    scores = evaluate(model, resolve_tasks([str(quiz)], [], []), limit=None)
    assert scores.scores["quiz"]["acc"] == pytest.approx(2 / 3)
    assert scores.samples["quiz"] == 3 and scores.model == "fake"
    limited = evaluate(model, resolve_tasks([str(quiz)], [], []), limit=1)
    assert limited.samples["quiz"] == 1 and limited.scores["quiz"]["acc"] == 1.0


LEAVES_NO_TRACE = """
import json, os, sys
from llmkit.evaluation.runner import load_tasks, local_only
from llmkit.evaluation.tasks import resolve_tasks

before = dict(os.environ)
(task,) = load_tasks(resolve_tasks([sys.argv[1]], [], []))
import datasets.config
import huggingface_hub.constants

with local_only():
    inside = datasets.config.HF_HUB_OFFLINE
print(json.dumps({
    "docs": len(list(task.eval_docs)),
    "environ_unchanged": dict(os.environ) == before,
    "hub": huggingface_hub.constants.HF_HUB_OFFLINE,
    "datasets": datasets.config.HF_HUB_OFFLINE,
    "datasets_inside": inside,
}))
"""


@pytest.mark.parametrize(
    ("users", "hub", "inside"),
    [
        ({}, False, True),
        ({"HF_HUB_OFFLINE": "1"}, True, True),
        ({"HF_DATASETS_OFFLINE": "0"}, False, False),  # the user's own switch lets lm-eval fetch
    ],
)
def test_loading_tasks_leaves_the_environment_and_the_hubs_setting_as_they_were(
    tmp_path: Path, users: dict[str, str], hub: bool, inside: bool
) -> None:
    # A fresh process, as a user's script that evaluates and then pulls a model from the hub:
    # huggingface_hub and datasets read their offline switch when they are first imported.
    pytest.importorskip("lm_eval")
    from llmkit.evaluation.runner import LOCAL_ONLY

    quiz = tmp_path / "quiz.jsonl"
    quiz.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    env = {k: v for k, v in os.environ.items() if k not in {*LOCAL_ONLY, "TRANSFORMERS_OFFLINE"}}
    done = subprocess.run(
        [sys.executable, "-c", LEAVES_NO_TRACE, str(quiz)],
        capture_output=True, text=True, timeout=300, env={**env, **users},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert found == {
        "docs": 1,
        "environ_unchanged": True,
        "hub": hub,
        "datasets": hub,  # after the scope, datasets follows the user's settings again
        "datasets_inside": inside,  # while lm-eval reads the tasks, no hub is asked
    }


# ---- tasks from local files ----------------------------------------------------------------
def test_the_built_in_set_is_valid_and_the_default() -> None:
    questions = read_choice_file(TASK_DIR / BUILTIN_TASKS["llmkit-facts"])
    assert len(questions) == 40
    assert len({q["question"] for q in questions}) == 40
    (spec,) = resolve_tasks([], [], [])
    assert spec.name == "llmkit-facts" and spec.kind == "choice"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "line 2 is not valid JSON"),
        ('["a list"]', "line 2 must be a JSON object"),
        ('{"question": "", "choices": ["a", "b"], "answer": 0}', "'question' must be"),
        ('{"question": "q", "choices": ["a"], "answer": 0}', "'choices' must be a list of two"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "'answer' must be the index"),
        ('{"question": "q", "choices": ["a", "b"], "answer": true}', "'answer' must be the index"),
    ],
)
def test_a_malformed_line_is_named(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n' + line + "\n")
    with pytest.raises(InvalidParameterError, match=expected):
        resolve_tasks([str(path)], [], [])


def test_unknown_missing_and_empty_tasks_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match=r"Unknown task 'hellaswag'.*llmkit-facts"):
        resolve_tasks(["hellaswag"], [], [])
    with pytest.raises(InvalidParameterError, match="No such task file"):
        resolve_tasks([str(tmp_path / "none.jsonl")], [], [])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidParameterError, match="holds no questions"):
        resolve_tasks([str(tmp_path / "empty.jsonl")], [], [])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InvalidParameterError, match="no text to score"):
        resolve_tasks([], [], [tmp_path / "empty.txt"])
    with pytest.raises(InvalidParameterError, match="No such task file"):
        resolve_tasks([], [tmp_path / "task.yaml"], [])
    with pytest.raises(InvalidParameterError, match="named twice"):
        resolve_tasks(["llmkit-facts", "llmkit-facts"], [], [])


def test_without_lm_eval_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkit.evaluation.runner import require_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # an import of it now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'llmkit\[eval\]'"):
        require_lm_eval()


# ---- on a real (tiny, random) model, both engines ------------------------------------------
@pytest.mark.parametrize(
    "engine", ["llamacpp", pytest.param("transformers", marks=pytest.mark.torch)]
)
def test_on_both_engines_a_continuation_scores_as_in_the_whole_text(
    tiny_gguf: Path, engine: str
) -> None:
    if engine == "transformers":
        pytest.importorskip("torch")
    import llmkit

    with llmkit.load(str(tiny_gguf), engine=engine, context_length=128) as model:
        text = model.tokenize("the cat sat on the mat and then it ran away")
        whole = score(model.engine, text).logprobs
        for split in (3, 7, 3):  # the second 3 starts from a cache holding a longer text
            found = continuation_likelihood(model.engine, text[:split], text[split:])
            assert found.logprob == pytest.approx(sum(whole[split - 1 :]), abs=1e-3)


def test_lm_eval_can_load_the_model_by_its_registered_name(tiny_gguf: Path) -> None:
    pytest.importorskip("lm_eval")
    from lm_eval.api.registry import get_model

    import llmkit.evaluation.adapter  # noqa: F401  (registers "llmkit")

    lm = get_model("llmkit").create_from_arg_string(f"model={tiny_gguf},context=64")
    try:
        assert lm.model.name == "tiny-llama" and lm.model.engine.name == "llamacpp"
        (found,) = lm.loglikelihood([request("the cat", " sat")])
        assert found[0] < 0
    finally:
        lm.model.close()
