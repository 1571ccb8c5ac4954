"""The running batch of the continuous-batching decoder (fts.generate.decoding) and its KV cache: rows of different
lengths in one cache, left-aligned with masked padding columns; cache layers that write each new token in place."""

import torch
from transformers import DynamicCache, DynamicLayer


class SpareLayer(DynamicLayer):
    """A cache layer whose keys and values are views into buffers with room for more tokens: a decoded token is
    written in place instead of the whole layer being copied (transformers' DynamicLayer concatenates on every
    step: 40% of the decoding time at batch 64 on the CPU). Selecting rows copies the buffers once, room included;
    cutting columns on the left is a view. Anything else that reassigns `keys`/`values` (the prefix repeated over a
    batch, padding on join) is honoured: the next update moves them into new buffers."""

    spare = 64  # tokens of room a new buffer leaves (the Decoder sets max_new_tokens)
    buffers: tuple[torch.Tensor, torch.Tensor] | None = None
    views: tuple[torch.Tensor, torch.Tensor] | None = None  # what update() last handed out

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used, n = self.get_seq_length(), key_states.shape[-2]
        if not self.in_buffers() or used + n > self.buffers[0].shape[-2]:
            capacity = used + n + self.spare
            self.buffers = (grown(self.keys, key_states, capacity), grown(self.values, value_states, capacity))
        for buffer, new in zip(self.buffers, (key_states, value_states), strict=True):
            buffer[:, :, used : used + n] = new
        self.show(used + n)
        return self.keys, self.values

    def in_buffers(self) -> bool:
        return self.views is not None and self.keys is self.views[0] and self.values is self.views[1]

    def show(self, used: int) -> None:
        self.keys, self.values = (b[:, :, :used] for b in self.buffers)
        self.views = (self.keys, self.values)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.in_buffers():
            return super().batch_select_indices(indices)
        used = self.get_seq_length()
        self.buffers = tuple(b[indices] for b in self.buffers)
        self.show(used)

    def cut_left(self, columns: int) -> None:
        """Drop the first `columns` cache columns (no row attends to them)."""
        used = self.get_seq_length()
        if not self.in_buffers():
            self.keys, self.values = self.keys[:, :, columns:], self.values[:, :, columns:]
            return
        self.buffers = tuple(b[:, :, columns:] for b in self.buffers)
        self.show(used - columns)


def grown(old: torch.Tensor, new: torch.Tensor, capacity: int) -> torch.Tensor:
    """A buffer of `capacity` tokens for a layer's keys (or values), holding `old` (possibly still empty)."""
    buffer = new.new_empty(*new.shape[:2], capacity, new.shape[-1])
    if old.numel():
        buffer[:, :, : old.shape[-2]] = old
    return buffer


class Batch:
    """The running rows: their prompt index, the KV cache, the attention mask over it, each row's token count (the
    position of its next token), its last token (the next step's input) and the tokens it generated so far.

    A row that ended is handed out at once and marked done; it leaves the cache when a batch_size/8 share of the
    rows are done, or before new rows join (selecting rows copies the cache: doing it on every ending cost more
    than decoding the few done rows a little longer)."""

    def __init__(self, index: list[int], cache: DynamicCache, mask: torch.Tensor, lengths: torch.Tensor, last):
        self.index, self.cache, self.mask, self.lengths, self.last = index, cache, mask, lengths, last
        self.generated = [[t] for t in last.tolist()]
        self.done = torch.zeros(len(index), dtype=torch.bool, device=last.device)

    @property
    def size(self) -> int:
        """The rows still decoding."""
        return len(self.index) - int(self.done.sum())

    def push(self, tokens: torch.Tensor) -> None:
        self.last = tokens
        for row, t in zip(self.generated, tokens.tolist(), strict=True):
            row.append(t)

    def pop_finished(self, stop: torch.Tensor, max_new_tokens: int, compact_at: int):
        """Yield (prompt index, new tokens) of the rows that ended; drop the done rows from the batch and its cache
        once `compact_at` of them are done."""
        full = torch.tensor([len(g) >= max_new_tokens for g in self.generated], device=self.last.device)
        ended = ~self.done & (torch.isin(self.last, stop) | full)
        for r in ended.nonzero()[:, 0].tolist():
            # a copy: a done row stays in the batch (and keeps receiving tokens) until the next compaction
            yield self.index[r], list(self.generated[r])
        self.done |= ended
        if int(self.done.sum()) >= min(compact_at, len(self.index)):
            self.compact()

    def compact(self) -> None:
        """Drop the done rows from the batch and the cache, and the columns no remaining row attends to."""
        if not bool(self.done.any()):
            return
        keep = (~self.done).nonzero()[:, 0]
        kept = keep.tolist()
        self.index = [self.index[r] for r in kept]
        self.generated = [self.generated[r] for r in kept]
        self.done = self.done[keep]
        if not kept:
            return
        self.cache.batch_select_indices(keep)
        self.mask, self.lengths, self.last = self.mask[keep], self.lengths[keep], self.last[keep]
        first = int(self.mask.any(0).nonzero()[0])  # padding, or the prompts of rows that left
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.cut_left(first)

    @staticmethod
    def join(running: "Batch | None", new: "Batch") -> "Batch":
        """One batch of both: the narrower cache left-padded (masked) to the wider one's width."""
        if running is None:
            return new
        running.compact()
        width = max(running.mask.shape[1], new.mask.shape[1])
        running.pad_left(width - running.mask.shape[1])
        new.pad_left(width - new.mask.shape[1])
        for mine, theirs in zip(running.cache.layers, new.cache.layers, strict=True):
            mine.keys = torch.cat([mine.keys, theirs.keys])
            mine.values = torch.cat([mine.values, theirs.values])
        running.index += new.index
        running.generated += new.generated
        running.done = torch.cat([running.done, new.done])
        running.mask = torch.cat([running.mask, new.mask])
        running.lengths = torch.cat([running.lengths, new.lengths])
        running.last = torch.cat([running.last, new.last])
        return running

    def pad_left(self, columns: int) -> None:
        if columns <= 0:
            return
        self.mask = torch.cat([self.mask.new_zeros(len(self.index), columns), self.mask], dim=-1)
        for layer in self.cache.layers:
            pad = layer.keys.new_zeros(*layer.keys.shape[:2], columns, layer.keys.shape[3])
            layer.keys = torch.cat([pad, layer.keys], dim=2)
            layer.values = torch.cat([pad, layer.values], dim=2)
