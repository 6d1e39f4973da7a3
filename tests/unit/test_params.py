import pytest

from llmkit.errors import InvalidParameterError
from llmkit.params import SamplingParams


@pytest.mark.parametrize(
    "changes",
    [
        {"temperature": -0.1},
        {"temperature": 11},
        {"top_k": -1},
        {"top_p": 0},
        {"top_p": 1.5},
        {"min_p": -0.1},
        {"repeat_penalty": 0},
        {"max_tokens": 0},
        {"seed": -1},
        {"presence_penalty": 3},
        {"stop": [""]},
    ],
)
def test_invalid_values_are_refused_with_a_clear_message(changes: dict) -> None:
    with pytest.raises(InvalidParameterError, match="Invalid sampling parameter"):
        SamplingParams().updated(**changes)


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match="Unknown sampling parameter"):
        SamplingParams().updated(temprature=1)


def test_updated_ignores_none_and_keeps_the_rest() -> None:
    params = SamplingParams(top_k=5).updated(temperature=0, top_p=None, stop=["x"])
    assert params.greedy and params.top_k == 5 and params.top_p == 0.95 and params.stop == ("x",)


@pytest.mark.parametrize(
    "changes",
    [
        {"repeat_last_n": 2147483647},
        {"repeat_last_n": 4097},
        {"top_k": 1001},
        {"max_tokens": 2**31},
        {"seed": 2**32},
        {"temperature": float("nan")},
        {"top_p": float("inf")},
        {"top_k": 2.5},
        {"repeat_last_n": True},
        {"stop": ["x"] * 17},
        {"stop": ["x" * 1001]},
    ],
)
def test_every_numeric_parameter_has_a_bound(changes: dict) -> None:
    with pytest.raises(InvalidParameterError, match="Invalid sampling parameter"):
        SamplingParams().updated(**changes)


def test_the_bounds_themselves_are_accepted() -> None:
    params = SamplingParams().updated(repeat_last_n=4096, top_k=1000, seed=2**32 - 1, max_tokens=1)
    assert params.repeat_last_n == 4096 and params.top_k == 1000
