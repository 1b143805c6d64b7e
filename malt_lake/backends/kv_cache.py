"""A KV cache that writes each decode step in place.

transformers' DynamicLayer appends with ``torch.cat``, copying the whole cache of every layer
at every step; at 96 rows x a few hundred tokens that copy costs as much as the step's
matmuls on a CPU. This layer keeps keys and values in a buffer reserved for prompt + answer
and hands attention views of the filled part.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers.cache_utils import Cache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose storage is reserved up front (and grows in chunks if exceeded)."""

    def __init__(self, reserve: int = 256) -> None:
        super().__init__()
        self.reserve = reserve
        self.length = 0
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            self._grow(key_states, end + self.reserve)
        self._keys[..., self.length:end, :] = key_states
        self._values[..., self.length:end, :] = value_states
        self.length = end
        self._refresh_views()
        return self.keys, self.values

    def _grow(self, like: torch.Tensor, capacity: int) -> None:
        batch, heads, _, dim = like.shape
        keys = like.new_empty((batch, heads, capacity, dim))
        values = like.new_empty((batch, heads, capacity, dim))
        if self.length:
            keys[..., :self.length, :] = self._keys[..., :self.length, :]
            values[..., :self.length, :] = self._values[..., :self.length, :]
        self._keys, self._values = keys, values

    def _refresh_views(self) -> None:
        self.keys = self._keys[..., :self.length, :]
        self.values = self._values[..., :self.length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._refresh_views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._keys = self._keys[indices, ...]
            self._values = self._values[indices, ...]
            self._refresh_views()


def reserved_cache(reserve: int) -> Cache:
    """A cache whose layers reserve ``reserve`` extra positions after the prompt."""
    return Cache(layer_class_to_replicate=partial(ReservedLayer, reserve=reserve))
