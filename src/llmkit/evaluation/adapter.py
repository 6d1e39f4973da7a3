"""An lm-eval model backed by llmkit: the harness asks the questions, llmkit's engines answer.

lm-eval reduces every task to three requests, and each maps onto something llmkit already does:

- loglikelihood(context, continuation): the continuation's log-probability after the context
  (likelihood.py, which keeps a shared context in the engine's cache between the answers);
- loglikelihood_rolling(text): a whole text's log-probability in windows of the context length,
  cut by lm-eval's own rolling-window helpers (perplexity);
- generate_until(context, kwargs): greedy generation through the one generation loop, with the
  task's stop strings.

Both engines work, since all of it goes through the engine protocol. Registered with lm-eval as
"llmkit", so `lm_eval --model llmkit --model_args model=smollm2,engine=llamacpp` works as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string

from llmkit.errors import LlmkitError
from llmkit.evaluation.likelihood import Likelihood, continuation_likelihood
from llmkit.model import Model, load
from llmkit.params import MAX_STOP_STRINGS, SamplingParams

# Called as requests are answered: (answered, of how many, which kind of request).
Progress = Callable[[int, int, str], None]
DEFAULT_MAX_GEN_TOKENS = 256  # as lm-eval's own models, when a task names no max_gen_toks


@register_model("llmkit")
class LlmkitLM(LM):
    def __init__(self, model: Model, progress: Progress | None = None) -> None:
        super().__init__()
        self.model = model
        self.progress = progress
        self.cut_requests = 0  # requests whose context lost its oldest tokens to fit the window

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> LlmkitLM:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string))

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> LlmkitLM:
        """Load the model named in lm-eval's --model_args (model=, engine=, context=)."""
        context = arg_dict.get("context")
        return cls(
            load(
                str(arg_dict.get("model", "smollm2")),
                engine=str(arg_dict.get("engine", "llamacpp")),
                context_length=int(context) if context else None,
            )
        )

    @property
    def tokenizer_name(self) -> str:
        # lm-eval keys its request caches by this name.
        return f"llmkit-{self.model.name}"

    @property
    def prefix_token(self) -> int:
        """What an empty context, or the first rolling window, is conditioned on: the model's
        BOS when raw text starts with one, otherwise its end-of-text token (as lm-eval does)."""
        facts = self.model.engine.tokenizer_facts
        first, second = (
            (facts.bos_id, facts.eos_id)
            if self.model.format.raw_adds_bos
            else (facts.eos_id, facts.bos_id)
        )
        token = first if first is not None else second
        if token is None:
            raise LlmkitError(
                f"'{self.model.name}' has neither a BOS nor an EOS token to score from."
            )
        return token

    # ---- the three requests ------------------------------------------------------------------
    def loglikelihood(
        self, requests: Sequence[Any], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(*request.args) for request in requests]
        return [(found.logprob, found.greedy) for found in self._score(pairs, "loglikelihood")]

    def loglikelihood_rolling(
        self, requests: Sequence[Any], disable_tqdm: bool = False
    ) -> list[float]:
        windows: list[tuple[list[int], list[int]]] = []
        owners: list[int] = []
        for number, request in enumerate(requests):
            (text,) = request.args
            tokens = self.model.tokenize(text)  # no BOS: the prefix token stands before them
            for window in get_rolling_token_windows(
                tokens, self.prefix_token, self.model.context_length, 1
            ):
                windows.append(make_disjoint_window(window))
                owners.append(number)
        totals = [0.0] * len(requests)
        for owner, found in zip(owners, self._score(windows, "perplexity")):
            totals[owner] += found.logprob
        return totals

    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        answers = []
        for number, request in enumerate(requests, start=1):
            context, kwargs = request.args
            answers.append(self._generate(context, dict(kwargs or {})))
            self._tick(number, len(requests), "generate")
        return answers

    # ---- how each is answered ----------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of a context and its continuation, split as lm-eval's own models split them:
        trailing spaces of the context go to the continuation, and the two are tokenized as one
        text, so the tokens at the join are the ones the model would see."""
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.prefix_token], self.model.tokenize(continuation)
        head = self.model.raw_prompt_ids(context)
        tail = self.model.raw_prompt_ids(context + continuation)[len(head) :]
        return head, tail or self.model.tokenize(continuation)

    def _score(self, pairs: Sequence[tuple[list[int], list[int]]], kind: str) -> list[Likelihood]:
        # Sorted by tokens, requests that share a context (one question's answers, one few-shot
        # prompt) come one after another, and the engine's cache keeps that context.
        order = sorted(range(len(pairs)), key=lambda index: pairs[index])
        found: list[Likelihood | None] = [None] * len(pairs)
        for done, index in enumerate(order, start=1):
            result = continuation_likelihood(self.model.engine, *pairs[index])
            self.cut_requests += result.cut > 0
            found[index] = result
            self._tick(done, len(pairs), kind)
        return [result for result in found if result is not None]

    def _generate(self, context: str, kwargs: dict[str, Any]) -> str:
        until = kwargs.pop("until", None) or []
        stops = tuple(stop for stop in ([until] if isinstance(until, str) else until) if stop)
        most = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKENS))
        sampled = kwargs.get("do_sample") and float(kwargs.get("temperature") or 0) > 0
        params = SamplingParams(
            temperature=float(kwargs["temperature"]) if sampled else 0.0,
            repeat_penalty=1.0,  # the harness compares plain greedy answers
            max_tokens=most,
            stop=stops[:MAX_STOP_STRINGS],
        )
        ids = self.model.raw_prompt_ids(context)
        room = self.model.context_length - most
        if len(ids) > room > 0:
            ids, self.cut_requests = ids[len(ids) - room :], self.cut_requests + 1
        return "".join(chunk.text for chunk in self.model.stream_ids(ids, params))

    def _tick(self, done: int, total: int, kind: str) -> None:
        if self.progress is not None:
            self.progress(done, total, kind)
