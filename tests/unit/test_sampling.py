import numpy as np

from llmkit.engines.logits_sampler import LogitsSampler
from llmkit.params import SamplingParams

LOGITS = np.array([1.0, 3.0, 2.5, -1.0, 0.0])


def sampler(history=(), **params) -> LogitsSampler:
    return LogitsSampler(SamplingParams(**params), history, lambda output: LOGITS)


def test_greedy_takes_the_argmax() -> None:
    assert sampler(temperature=0, repeat_penalty=1.0).sample() == 1


def test_repeat_penalty_can_change_the_greedy_choice() -> None:
    # 3.0 / 1.5 = 2.0 < 2.5, so the repeated token loses.
    assert sampler([1], temperature=0, repeat_penalty=1.5).sample() == 2


def test_top_k_one_is_greedy_at_any_temperature() -> None:
    assert {sampler(temperature=5, top_k=1, seed=s).sample() for s in range(20)} == {1}


def test_seed_makes_sampling_repeatable() -> None:
    first = [sampler(temperature=1.0, seed=7, min_p=0).sample() for _ in range(5)]
    again = [sampler(temperature=1.0, seed=7, min_p=0).sample() for _ in range(5)]
    assert first == again


def test_min_p_and_top_p_restrict_the_candidates() -> None:
    draws = {
        sampler(temperature=1.0, seed=s, min_p=0.5, top_k=0, top_p=1.0).sample() for s in range(50)
    }
    assert draws <= {1, 2}
    draws = {
        sampler(temperature=1.0, seed=s, min_p=0.0, top_k=0, top_p=0.3).sample() for s in range(50)
    }
    assert draws == {1}


def test_history_grows_with_each_sample() -> None:
    s = sampler(temperature=0, repeat_penalty=1.0)
    s.sample()
    s.sample()
    assert s.history == [1, 1]


class AllowOnly:
    def __init__(self, *allowed: int) -> None:
        self.mask = np.zeros(LOGITS.size, dtype=bool)
        self.mask[list(allowed)] = True
        self.accepted: list[int] = []

    def allowed(self) -> np.ndarray:
        return self.mask

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    @property
    def finished(self) -> bool:
        return False


def test_a_constraint_masks_before_penalties_and_draws() -> None:
    constraint = AllowOnly(3, 4)
    greedy = LogitsSampler(SamplingParams(temperature=0), [4], lambda output: LOGITS, constraint)
    # Token 4 (0.0) is penalized to 0.0, still above -1.0; the favourite (1) is not allowed.
    assert greedy.sample() == 4
    hot = SamplingParams(temperature=5, top_k=0, top_p=1.0, min_p=0.0)
    draws = {
        LogitsSampler(hot.updated(seed=s), [], lambda output: LOGITS, constraint).sample()
        for s in range(30)
    }
    assert draws == {3, 4}
    assert constraint.accepted[0] == 4 and len(constraint.accepted) == 31


def test_the_output_row_is_passed_to_the_logits_reader() -> None:
    rows = {0: LOGITS, 1: LOGITS[::-1].copy()}
    s = LogitsSampler(SamplingParams(temperature=0, repeat_penalty=1.0), [], rows.__getitem__)
    assert (s.sample(0), s.sample(1)) == (1, 3)
