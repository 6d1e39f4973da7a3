"""Pretraining from nothing on a tiny config: the corpus checks, the tokenizer, the learning
(held-out loss well below a unigram model's), resuming, and the GGUF that llama.cpp runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from tests.helpers.stories import TEST_SHAPE, story_corpus

from llmkit.errors import InvalidParameterError
from llmkit.train.corpus import encode_corpus, read_corpus
from llmkit.train.data import DataError
from llmkit.train.model_config import SIZES, model_shape
from llmkit.train.pretrain import pretrain, split_stream, unigram_loss
from llmkit.train.pretrain_config import PretrainConfig


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return story_corpus(tmp_path_factory.mktemp("corpus") / "stories.txt")


@pytest.fixture(scope="module")
def shape_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shape") / "test-shape.json"
    path.write_text(json.dumps(TEST_SHAPE))
    return path


def test_named_sizes_count_their_parameters_as_torch_does() -> None:
    import transformers

    for name, shape in SIZES.items():
        small = shape.with_vocabulary(512)
        model = transformers.LlamaForCausalLM(small.transformers_config(0, 0))
        assert small.parameters() == sum(p.numel() for p in model.parameters()), name
    assert 1_000_000 < SIZES["tiny"].parameters() < 3_000_000
    assert 10_000_000 < SIZES["small"].parameters() < 20_000_000


def test_a_config_file_is_checked_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "shape.json"
    path.write_text(json.dumps({"hidden_size": 96, "num_layers": 2}))
    with pytest.raises(InvalidParameterError, match="unknown keys num_layers"):
        model_shape(str(path))
    path.write_text(json.dumps({"hidden_size": 100, "num_attention_heads": 3}))
    with pytest.raises(InvalidParameterError, match="multiple of num_attention_heads"):
        model_shape(str(path))
    path.write_text("{not json")
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        model_shape(str(path))
    with pytest.raises(InvalidParameterError, match="tiny, small or a JSON"):
        model_shape("huge")
    path.write_text(json.dumps({"num_hidden_layers": 3}))
    assert model_shape(str(path)).num_hidden_layers == 3


def test_documents_are_split_on_separator_lines_and_bad_files_refused(tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_text("first one\n<|endoftext|>\nsecond\n\n<|endoftext|>\n")
    assert read_corpus([text]).documents == ["first one", "second"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="holds no text"):
        read_corpus([empty])
    binary = tmp_path / "b.bin"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        read_corpus([binary])
    with pytest.raises(DataError, match="Cannot read"):
        read_corpus([tmp_path / "missing.txt"])


def test_a_trained_tokenizer_encodes_any_text_and_a_foreign_one_is_refused(
    tmp_path: Path, corpus_file: Path
) -> None:
    import tokenizers
    import transformers

    from llmkit.train.tokenizer_train import train_tokenizer

    corpus = read_corpus([corpus_file])
    trained = train_tokenizer(corpus.documents, 300, tmp_path / "tok")
    for text in ["The cat sees the dog.", "ünïcødé 漢字 🙂", "  spaces\tand\ttabs\n"]:
        ids = trained(text, add_special_tokens=False)["input_ids"]
        assert trained.decode(ids) == text
    stream = encode_corpus(corpus, trained, "trained")
    assert (stream == trained.convert_tokens_to_ids("<|endoftext|>")).sum() == len(corpus.documents)
    # A word-level vocabulary that knows none of the corpus's words.
    word = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "hello": 1}, "[UNK]"))
    word.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    foreign = transformers.PreTrainedTokenizerFast(tokenizer_object=word, unk_token="[UNK]")
    with pytest.raises(DataError, match="cannot encode this text: 100% of its tokens are unknown"):
        encode_corpus(corpus, foreign, "'words'")


def test_a_corpus_shorter_than_one_window_is_refused() -> None:
    with pytest.raises(DataError, match="training on windows of 64 tokens needs more than"):
        split_stream(np.arange(50, dtype=np.int32), 0.05, 64)


def test_unigram_loss_is_the_entropy_of_token_frequencies() -> None:
    train = np.array([0, 0, 1, 1], dtype=np.int32)
    assert unigram_loss(train, np.array([0, 1]), 2) == pytest.approx(np.log(2))


def _config(corpus: Path, shape: Path, tmp: Path, **overrides: object) -> PretrainConfig:
    settings: dict = dict(
        out="tiny-test", data=(str(corpus),), size=str(shape), steps=40, batch_size=8,
        lr=5e-3, sample_every=20, sample_tokens=8, export="f32", run_dir=str(tmp / "run"),
        threads=1,  # one thread: on a shared, busy machine two spin against each other
    )  # fmt: skip
    settings.update(overrides)
    return PretrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, corpus_file: Path, shape_file: Path):
    tmp = tmp_path_factory.mktemp("pretrain")
    steps = []
    result = pretrain(_config(corpus_file, shape_file, tmp), progress=steps.append, home=tmp)
    return result, steps, tmp


def test_the_model_learns_well_beyond_a_unigram_model(trained) -> None:
    result, steps, _ = trained
    assert result.steps == 40 and len(steps) == 40
    # Token frequencies alone cannot predict the grammar; a model reading the context can.
    assert result.eval_loss < result.unigram_loss - 1.0, (result.eval_loss, result.unigram_loss)
    samples = [step for step in steps if step.sample is not None]
    assert [s.metrics.step for s in samples] == [20, 40]
    assert steps[-1].metrics.tokens == 40 * 8 * 64
    assert steps[-1].tokens_per_parameter == pytest.approx(40 * 8 * 64 / result.parameters)
    assert (result.run_dir / "loss.png").exists()
    assert (result.run_dir / "model" / "config.json").exists()


def test_the_gguf_export_matches_the_pytorch_model(trained) -> None:
    """llama.cpp runs the exported file with the trained tokenizer: same tokens, same logits,
    same greedy continuation as the PyTorch model."""
    import torch
    import transformers

    import llmkit
    from llmkit.engines.base import BatchItem

    result, _, tmp = trained
    folder = result.run_dir / "model"
    model = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(folder)
    text = "The fox helps the king by the river"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
        greedy = model.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=0
        )[0, len(ids) :].tolist()
    manifest = llmkit.ModelStore(tmp).resolve("tiny-test")
    with llmkit.load(str(manifest.weights_path), context_length=64) as loaded:
        assert loaded.tokenize(text) == ids
        context = loaded.engine.context
        context.keep_prefix(0, 0)
        context.decode([BatchItem(0, ids, all_logits=True)])
        rows = np.stack([np.array(context.logits(row)) for row in range(len(ids))])
        np.testing.assert_allclose(rows, reference, rtol=0, atol=2e-3)
        stream = loaded.stream_completion(text, max_tokens=12, temperature=0.0, repeat_penalty=1.0)
        for _ in stream:
            pass
    end = model.config.eos_token_id
    expected = greedy[: greedy.index(end)] if end in greedy else greedy
    assert stream.result is not None and stream.result.token_ids == expected


def test_resume_continues_to_the_same_loss(
    tmp_path: Path, corpus_file: Path, shape_file: Path
) -> None:
    class Stop(Exception):
        pass

    def stop_at_step_15(step) -> None:
        if step.metrics.step == 15:
            raise Stop

    whole = pretrain(
        _config(corpus_file, shape_file, tmp_path / "a", steps=20, sample_every=0), home=tmp_path
    )
    broken = _config(
        corpus_file, shape_file, tmp_path / "b", steps=20, sample_every=0, checkpoint_every=10,
        out="resumed",
    )  # fmt: skip
    with pytest.raises(Stop):
        pretrain(broken, progress=stop_at_step_15, home=tmp_path)
    broken.resume = True
    seen: list = []
    resumed = pretrain(broken, progress=seen.append, home=tmp_path)
    assert seen[0].metrics.step == 11
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-5)


def test_tokens_set_the_number_of_steps(
    tmp_path: Path, corpus_file: Path, shape_file: Path
) -> None:
    # 8 sequences of 64 tokens a step: 1,000 tokens take two steps.
    config = _config(corpus_file, shape_file, tmp_path, steps=None, tokens=1000, sample_every=0)
    result = pretrain(config, home=tmp_path)
    assert result.steps == 2 and result.tokens == 2 * 8 * 64
