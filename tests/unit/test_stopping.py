import pytest

from llmkit.generation.stopping import IncrementalDecoder, StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    shown = "".join(matcher.feed(piece) for piece in pieces)
    return shown + matcher.flush()


def test_stop_string_split_across_pieces_is_never_shown() -> None:
    matcher = StopMatcher(["\nUser:"])
    shown = [matcher.feed(p) for p in ["Hello", " there", "\n", "Us", "er", ": next"]]
    assert shown == ["Hello", " there", "", "", "", ""]
    assert matcher.stopped and matcher.matched == "\nUser:"
    assert matcher.flush() == ""


def test_held_back_text_is_released_when_the_stop_does_not_form() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ab ST") == "ab "
    assert matcher.feed("AR") == "STAR"
    assert feed_all(StopMatcher(["STOP"]), ["x", "ST"]) == "xST"


def test_earliest_of_several_stop_strings_wins() -> None:
    matcher = StopMatcher(["world", "lo w"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.matched == "lo w"


def test_stop_inside_one_piece_cuts_it() -> None:
    matcher = StopMatcher(["###"])
    assert matcher.feed("answer###rest") == "answer"
    assert matcher.feed("more") == ""


def test_no_stop_strings_passes_everything_through() -> None:
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"


@pytest.mark.parametrize("split", [1, 2, 3])
def test_utf8_character_split_across_tokens(split: int) -> None:
    data = "é😀".encode()
    decoder = IncrementalDecoder()
    text = decoder.feed(data[:split]) + decoder.feed(data[split:]) + decoder.flush()
    assert text == "é😀"


def test_invalid_bytes_become_replacement_characters() -> None:
    decoder = IncrementalDecoder()
    assert decoder.feed(b"a\xff") + decoder.flush() == "a\ufffd"
