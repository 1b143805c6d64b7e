"""A KV cache that writes each decode step in place and stores a shared prompt once.

transformers' DynamicLayer appends with ``torch.cat``, copying the whole cache of every layer
at every step; at 96 rows x a few hundred tokens that copy costs as much as the step's
matmuls on a CPU. This layer keeps keys and values in a buffer reserved for prompt + answer
and hands attention views of the filled part.

After the prefill, ``share_prefix(n)`` turns the n samples of each prompt into rows that
share the prompt's keys and values (kept once per prompt) and own only what they generate.
Refiner prompts run to ~450 tokens and answers to ~100, so decode attention then reads about
a third of the cache it read with the prompt copied n times (``decode_attention`` does the
split softmax). The generated part is handed to attention as its whole buffer (zeros past
the filled length, which attention masks): a batched matmul on a CPU copies a view whose
rows are spaced wider than its length, and that copy cost twice the matmul itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from transformers.cache_utils import Cache, DynamicLayer

# first capacity of the generated part of a shared-prefix cache; doubles when full, so the
# attention over the whole buffer does at most about twice the suffix work it needs
SUFFIX_START = 32


class SharedPrefix(NamedTuple):
    """Keys (or values) of rows whose prompts are stored once per prompt.

    Row ``r`` is sample ``slots[r] % n`` of prompt ``slots[r] // n``; it sees that prompt's
    ``prefix`` followed by its own ``suffix``.
    """

    prefix: torch.Tensor  # (prompts, kv_heads, prompt_len, head_dim)
    suffix: torch.Tensor  # (rows, kv_heads, capacity, head_dim): zeros past ``length``
    length: int           # generated positions filled in ``suffix``
    slots: torch.Tensor   # (rows,) prompt * n + sample
    n: int
    prompt_of: torch.Tensor  # (rows,) slots // n
    sample_of: torch.Tensor  # (rows,) slots % n

    @property
    def complete(self) -> bool:
        """Every sample of every kept prompt is a row (slots are 0, 1, ..., prompts*n - 1)."""
        return self.slots.shape[0] == self.prefix.shape[0] * self.n


@dataclass
class PrefillChunk:
    """The rows a chunked prefill is writing now, shared by every layer of one cache (layers
    are created on their first update)."""

    rows: int = 0                # rows of the whole batch
    width: int = 0               # positions the prefill adds to every row
    window: slice | None = None  # None: not inside a chunked prefill
    skip: int = 0                # leading positions (padding in every row) the window skips


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose storage is reserved up front (and grows in chunks if exceeded)."""

    def __init__(self, reserve: int = 256, chunk: PrefillChunk | None = None) -> None:
        super().__init__()
        self.reserve = reserve
        self.chunk = chunk or PrefillChunk()
        self.length = 0          # positions seen, prompt included
        self.offset = 0          # positions kept in the shared prefix (0: not shared)
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self._prefix: tuple[torch.Tensor, torch.Tensor] | None = None
        self.slots: torch.Tensor | None = None
        self._slot_parts: tuple[torch.Tensor, torch.Tensor] | None = None
        self.n = 1

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.length - self.offset
        end = start + key_states.shape[-2]
        if self.chunk.window is not None:
            return self._update_window(key_states, value_states, start, end)
        if self._keys is None or end > self._keys.shape[-2]:
            if self._prefix is None:
                capacity = end + self.reserve
            else:  # the generated part of a shared cache doubles, up to the reserve
                capacity = max(end, min(2 * self._keys.shape[-2], self.reserve))
            self._grow(key_states, capacity)
        self._keys[..., start:end, :] = key_states
        self._values[..., start:end, :] = value_states
        self.length += key_states.shape[-2]
        self._refresh_views()
        if self._prefix is None:
            return self.keys, self.values
        # the whole suffix buffer, not a view of its filled part: a batched matmul copies a
        # view whose rows are spaced wider than its length, every layer and step; attention
        # masks the unfilled (zero) positions instead
        prefix_keys, prefix_values = self._prefix
        return (SharedPrefix(prefix_keys, self._keys, end, self.slots, self.n,
                             *self._slot_parts),
                SharedPrefix(prefix_values, self._values, end, self.slots, self.n,
                             *self._slot_parts))

    def _update_window(self, key_states: torch.Tensor, value_states: torch.Tensor,
                       start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk of rows of a prefill, written into those rows of the buffer; the
        length stays put until every chunk is in (``end_chunks``)."""
        if self._keys is None:
            _, heads, _, dim = key_states.shape
            capacity = start + self.chunk.width + self.reserve
            self._keys = key_states.new_zeros((self.chunk.rows, heads, capacity, dim))
            self._values = value_states.new_zeros(self._keys.shape)
        elif start + self.chunk.width > self._keys.shape[-2]:
            raise RuntimeError("a chunked prefill needs room for its width (select_rows)")
        # positions skipped keep their zeros; the mask hides them as the padding they are
        start, end = start + self.chunk.skip, end + self.chunk.skip
        rows = self.chunk.window
        self._keys[rows, :, start:end, :] = key_states
        self._values[rows, :, start:end, :] = value_states
        return self._keys[rows, :, :end, :], self._values[rows, :, :end, :]

    def end_chunks(self, width: int) -> None:
        self.length += width
        self._refresh_views()

    def get_seq_length(self) -> int:
        """Positions before the next query: inside a prefill window, the skipped ones too
        (transformers places the queries and sizes the mask by it)."""
        if not self.is_initialized:
            return 0
        return self.length + (self.chunk.skip if self.chunk.window is not None else 0)

    def _grow(self, like: torch.Tensor, capacity: int) -> None:
        rows = like.shape[0] if self._keys is None else self._keys.shape[0]
        _, heads, _, dim = like.shape
        keys = like.new_zeros((rows, heads, capacity, dim))
        values = like.new_zeros((rows, heads, capacity, dim))
        filled = self.length - self.offset
        if filled:
            keys[..., :filled, :] = self._keys[..., :filled, :]
            values[..., :filled, :] = self._values[..., :filled, :]
        self._keys, self._values = keys, values

    def _refresh_views(self) -> None:
        filled = self.length - self.offset
        self.keys = self._keys[..., :filled, :]
        self.values = self._values[..., :filled, :]

    def select_rows(self, index: torch.Tensor, room: int) -> None:
        """Before the prompts' last part: row ``i`` becomes a copy of row ``index[i]`` of what
        is cached (a prefix some prompts start with), with room for ``room`` more positions
        (the rest of each prompt; when it fills the room exactly, ``share_prefix`` needs no
        copy)."""
        if self.offset or self._keys is None:
            raise RuntimeError("select_rows runs between prefill parts, before share_prefix")
        filled = self.length
        for name in ("_keys", "_values"):
            old = getattr(self, name)
            rows = old.new_zeros((len(index), old.shape[1], filled + room, old.shape[3]))
            rows[..., :filled, :] = old[index, :, :filled, :]
            setattr(self, name, rows)
        self._refresh_views()

    def share_prefix(self, n: int) -> None:
        """Keep what is cached as one prefix per row, shared by that row's ``n`` samples."""
        if not self.length or self._prefix is not None:
            raise RuntimeError("share_prefix runs once, right after the prefill")
        self._prefix = (self.keys.contiguous(), self.values.contiguous())
        prompts, heads, _, dim = self._keys.shape
        self.offset, self.n = self.length, n
        self._set_slots(torch.arange(prompts * n, device=self._keys.device))
        capacity = min(self.reserve, SUFFIX_START)  # doubles when full
        self._keys = self._keys.new_zeros((prompts * n, heads, capacity, dim))
        self._values = self._values.new_zeros((prompts * n, heads, capacity, dim))
        self._refresh_views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._refresh_views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.length:
            return
        self._keys = self._keys[indices, ...]
        self._values = self._values[indices, ...]
        self._refresh_views()
        if self._prefix is not None:
            self._select_prefixes(self.slots[indices])

    def _select_prefixes(self, slots: torch.Tensor) -> None:
        """Drop the prompts none of the remaining rows belong to."""
        groups = slots // self.n
        live = torch.unique(groups)  # sorted
        if len(live) < self._prefix[0].shape[0]:
            remap = torch.full((self._prefix[0].shape[0],), -1, dtype=slots.dtype,
                               device=slots.device)
            remap[live] = torch.arange(len(live), dtype=slots.dtype, device=slots.device)
            self._prefix = (self._prefix[0][live], self._prefix[1][live])
            slots = remap[groups] * self.n + slots % self.n
        self._set_slots(slots)

    def _set_slots(self, slots: torch.Tensor) -> None:
        self.slots = slots
        self._slot_parts = (slots // self.n, slots % self.n)  # once here, not in every layer


def reserved_cache(reserve: int) -> Cache:
    """A cache whose layers reserve ``reserve`` extra positions after the prompt."""
    chunk = PrefillChunk()
    cache = Cache(layer_class_to_replicate=partial(ReservedLayer, reserve=reserve, chunk=chunk))
    cache.prefill_chunk = chunk
    return cache


def repeat_rows(cache: Cache, rows: int, room: int) -> None:
    """After a one-row prefill of a ``reserved_cache``: that prefix for ``rows`` rows."""
    if cache.layers and cache.layers[0].keys.shape[0] != 1:
        raise RuntimeError("repeat_rows runs right after a one-row prefill")
    select_rows(cache, torch.zeros(rows, dtype=torch.long), room)


def select_rows(cache: Cache, index: torch.Tensor, room: int) -> None:
    """Between prefill parts of a ``reserved_cache``: row i becomes a copy of row
    ``index[i]``, with room for ``room`` more positions."""
    for layer in cache.layers:
        layer.select_rows(index.to(layer.keys.device), room)


def prefill_in_chunks(cache: Cache, lengths: list[int], chunk_rows: int,
                      forward: Callable[[slice, int], torch.Tensor]) -> torch.Tensor:
    """Prefill rows of ``lengths`` new tokens, each left-padded to the longest, into
    ``cache``, ``chunk_rows`` rows at a time: ``forward(rows, skip)`` runs the model on those
    rows without their first ``skip`` positions (padding in each of them: a chunk of short
    rows is not padded to the batch's longest) and returns their last logits, which come back
    concatenated. On a CPU a few thousand tokens per forward keep the elementwise work
    (norms, activations) in cache instead of streaming activations of the whole batch
    through memory."""
    chunk: PrefillChunk = cache.prefill_chunk
    width = max(lengths)
    chunk.rows, chunk.width, logits = len(lengths), width, []
    try:
        for start in range(0, len(lengths), chunk_rows):
            chunk.window = slice(start, min(len(lengths), start + chunk_rows))
            # the first forward into an empty cache creates its layers, which only then
            # can tell transformers about skipped positions: it runs the whole width
            chunk.skip = width - max(lengths[chunk.window]) if cache.layers else 0
            logits.append(forward(chunk.window, chunk.skip))
    finally:
        chunk.window, chunk.skip = None, 0
    for layer in cache.layers:
        layer.end_chunks(width)
    return torch.cat(logits)


def share_prefix(cache: Cache, n: int) -> None:
    """After the prefill of a ``reserved_cache``: n samples per prompt, prompt stored once."""
    for layer in cache.layers:
        layer.share_prefix(n)
