"""A batched KV cache for the PyTorch engine: N sequences, one forward pass per decode call.

Each sequence's keys and values are kept on their own while it is idle. A decode call packs the
sequences it names into one batch: their caches left-padded to a common length, their new tokens
left-padded to a common width (so every sequence's last token lands in the last column), with a
4D attention mask that hides the padding and position ids that continue each sequence where it
stopped. While the same sequences keep decoding together, the packed cache is reused step after
step (the model appends to it), so the usual case costs no copying beyond what the model does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmkit.engines.base import BatchItem, TokenConstraint
from llmkit.engines.logits_sampler import LogitsSampler
from llmkit.errors import ContextOverflowError, InvalidParameterError
from llmkit.params import SamplingParams

# Keys and values of one sequence: one (keys, values) pair per layer, each [1, heads, length, dim].
LayerCache = list[tuple[Any, Any]]


@dataclass
class _Packed:
    """The sequences of the latest decode call, packed along the batch dimension."""

    rows: list[int]  # sequence index of each batch row
    cache: Any  # a transformers DynamicCache with [rows, heads, columns, dim] per layer
    keep: Any  # bool [rows, columns]: True where the column holds one of the row's real tokens


class TorchContext:
    """Implements the engine protocol's Context over a Hugging Face causal language model."""

    def __init__(
        self,
        model: Any,
        *,
        sequences: int,
        sequence_length: int,
        device: str,
        cache_argument: str,
    ) -> None:
        if sequences < 1 or sequence_length < 1:
            raise InvalidParameterError("A context needs at least one sequence of one token.")
        import torch
        from transformers import DynamicCache

        self.torch = torch
        self._new_cache: Callable[..., Any] = DynamicCache
        self.model = model
        self.device = device
        self.sequences = sequences
        self.sequence_length = sequence_length
        self._cache_argument = cache_argument
        self._tokens: list[list[int]] = [[] for _ in range(sequences)]
        self._stored: list[LayerCache | None] = [None] * sequences
        self._packed: _Packed | None = None
        self._logits = np.zeros((0, 0), dtype=np.float32)

    # ---- the protocol ----------------------------------------------------------------------
    def decode(self, items: Sequence[BatchItem]) -> None:
        rows = [item.sequence for item in items]
        self._check(items)
        if self._packed is None or self._packed.rows != rows:
            self._unpack()
            self._packed = self._pack(rows)
        try:
            logits = self._forward(self._packed, items)
        except RuntimeError as error:  # out of memory, most likely; the cache may be half updated
            self._packed = None
            for sequence in rows:
                self._clear(sequence)
            raise ContextOverflowError(f"The batch could not be evaluated: {error}") from error
        for item in items:
            self._tokens[item.sequence].extend(item.tokens)
        self._logits = logits
        self._compact_if_wasteful()

    def cached(self, sequence: int) -> Sequence[int]:
        return tuple(self._tokens[self._index(sequence)])

    def keep_prefix(self, sequence: int, length: int) -> None:
        sequence = self._index(sequence)
        if length >= len(self._tokens[sequence]):
            return
        self._unpack()
        if length <= 0:
            self._clear(sequence)
            return
        stored = self._stored[sequence]
        assert stored is not None
        self._stored[sequence] = [(k[:, :, :length], v[:, :, :length]) for k, v in stored]
        del self._tokens[sequence][length:]

    def copy_sequence(self, source: int, target: int) -> None:
        source, target = self._index(source), self._index(target)
        if source == target:
            return
        self._unpack()
        # The target shares the source's tensors rather than cloning them: a cache only ever
        # grows by concatenation into new tensors (and is cut back by slicing), never in place,
        # so neither sequence's later tokens can reach the other's keys and values.
        stored = self._stored[source]
        self._stored[target] = None if stored is None else list(stored)
        self._tokens[target] = list(self._tokens[source])

    def logits(self, output: int = -1) -> np.ndarray:
        return self._logits[output]

    def new_sampler(
        self,
        params: SamplingParams,
        history: Sequence[int],
        constraint: TokenConstraint | None = None,
    ) -> LogitsSampler:
        return LogitsSampler(params, history, self.logits, constraint)

    def close(self) -> None:
        self._packed = None
        self._stored = [None] * self.sequences
        self._tokens = [[] for _ in range(self.sequences)]

    # ---- packing -------------------------------------------------------------------------
    def _check(self, items: Sequence[BatchItem]) -> None:
        if not items:
            raise InvalidParameterError("A decode call needs at least one item.")
        seen: set[int] = set()
        for item in items:
            sequence = self._index(item.sequence)
            if sequence in seen:
                raise InvalidParameterError(
                    f"Sequence {sequence} appears twice in one decode call; join its tokens."
                )
            seen.add(sequence)
            if not item.tokens:
                raise InvalidParameterError(f"The item for sequence {sequence} has no tokens.")
        full = [
            item.sequence
            for item in items
            if len(self._tokens[item.sequence]) + len(item.tokens) > self.sequence_length
        ]
        if full:
            self._unpack()
            for sequence in full:
                self._clear(sequence)
            raise ContextOverflowError(
                f"Sequence {full[0]} would exceed its {self.sequence_length}-token context; "
                "its cache was cleared."
            )

    def _index(self, sequence: int) -> int:
        if not 0 <= sequence < self.sequences:
            raise InvalidParameterError(
                f"Sequence {sequence} does not exist; this context holds {self.sequences}."
            )
        return sequence

    def _clear(self, sequence: int) -> None:
        self._tokens[sequence] = []
        self._stored[sequence] = None

    def _pack(self, rows: list[int]) -> _Packed:
        torch = self.torch
        lengths = [len(self._tokens[s]) for s in rows]
        width = max(lengths)
        keep = torch.zeros((len(rows), width), dtype=torch.bool, device=self.device)
        for row, length in enumerate(lengths):
            keep[row, width - length :] = True
        if width == 0:
            return _Packed(rows, self._new_cache(), keep)
        reference = next(self._stored[s] for s in rows if self._stored[s] is not None)
        assert reference is not None
        layers = []
        for layer, references in enumerate(reference):
            pair = []
            for index, ref in enumerate(references):  # keys, then values
                padded = []
                for sequence, length in zip(rows, lengths):
                    row_parts = []
                    if length < width:
                        shape = (1, ref.shape[1], width - length, ref.shape[3])
                        row_parts.append(ref.new_zeros(shape))
                    stored = self._stored[sequence]
                    if length:
                        assert stored is not None
                        row_parts.append(stored[layer][index])
                    padded.append(torch.cat(row_parts, dim=2))
                pair.append(torch.cat(padded, dim=0))
            layers.append((pair[0], pair[1]))
        return _Packed(rows, self._new_cache(ddp_cache_data=layers), keep)

    def _unpack(self) -> None:
        """Give every packed sequence its own compact keys and values again."""
        packed, self._packed = self._packed, None
        if packed is None or packed.keep.shape[1] == 0:
            return
        layers = _cache_layers(packed.cache)
        for row, sequence in enumerate(packed.rows):
            columns = packed.keep[row].nonzero().squeeze(1)
            if columns.numel() == 0:
                self._stored[sequence] = None
                continue
            start = int(columns[0])
            contiguous = int(columns[-1]) - start + 1 == columns.numel()
            self._stored[sequence] = [
                (
                    keys[row : row + 1, :, start : start + columns.numel()]
                    if contiguous
                    else keys[row : row + 1].index_select(2, columns),
                    values[row : row + 1, :, start : start + columns.numel()]
                    if contiguous
                    else values[row : row + 1].index_select(2, columns),
                )
                for keys, values in layers
            ]

    def _compact_if_wasteful(self) -> None:
        """Padding left by a prefill beside decoding sequences costs every later step; when it is
        more than half the packed cache, give it back (the next call packs tightly)."""
        packed = self._packed
        if packed is None or packed.keep.numel() <= 256:
            return
        if int(packed.keep.sum()) * 2 < packed.keep.numel():
            self._unpack()

    # ---- evaluation ----------------------------------------------------------------------
    def _forward(self, packed: _Packed, items: Sequence[BatchItem]) -> np.ndarray:
        torch = self.torch
        past = packed.keep.shape[1]
        width = max(len(item.tokens) for item in items)
        count = len(items)
        ids = torch.zeros((count, width), dtype=torch.long)
        new_keep = torch.zeros((count, width), dtype=torch.bool)
        positions = torch.zeros((count, width), dtype=torch.long)
        for row, item in enumerate(items):
            length, start = len(item.tokens), len(self._tokens[item.sequence])
            ids[row, width - length :] = torch.tensor(list(item.tokens), dtype=torch.long)
            new_keep[row, width - length :] = True
            positions[row, width - length :] = torch.arange(start, start + length)
        keep = torch.cat([packed.keep, new_keep.to(self.device)], dim=1)
        arguments: dict[str, Any] = {}
        if not bool(keep.all()):
            # Row b's query q sees the row's real columns up to its own; every query also sees
            # itself, so a padding query never has an empty row (which would yield NaNs).
            columns = torch.arange(past + width, device=self.device)
            own = past + torch.arange(width, device=self.device)
            causal = columns[None, :] <= own[:, None]
            allowed = keep[:, None, :] & causal[None]
            allowed |= (columns[None, :] == own[:, None])[None]
            dtype = self.model.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
            mask.masked_fill_(~allowed, torch.finfo(dtype).min)
            arguments["attention_mask"] = mask[:, None]
            arguments["position_ids"] = positions.to(self.device)
        # With no padding anywhere every row has the same past, and the model's own causal mask
        # and positions are right (and faster).
        every = any(item.all_logits and item.want_logits for item in items)
        with torch.inference_mode():
            output = self.model(
                input_ids=ids.to(self.device),
                use_cache=True,
                logits_to_keep=0 if every else 1,
                **{self._cache_argument: packed.cache},
                **arguments,
            )
        packed.keep = keep
        # Output rows in item order: each token's for an all_logits item, else the last one's
        # (tokens sit at the right end of their row, after any padding).
        wanted = [
            (row, column)
            for row, item in enumerate(items)
            if item.want_logits
            for column in (
                range(width - len(item.tokens), width) if item.all_logits else (width - 1,)
            )
        ]
        if not wanted:
            return np.zeros((0, output.logits.shape[-1]), dtype=np.float32)
        kept = output.logits.shape[1]  # 1, or every column with all_logits
        rows = torch.tensor([row for row, _ in wanted])
        columns = torch.tensor([column - (width - kept) for _, column in wanted])
        return output.logits[rows, columns].float().cpu().numpy()


def _cache_layers(cache: Any) -> list[tuple[Any, Any]]:
    """(keys, values) per layer of a DynamicCache, across transformers versions."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))
