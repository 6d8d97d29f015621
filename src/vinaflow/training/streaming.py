"""Minibatches read from a sharded bank that need not fit in memory.

Training rows are visited in *windows*: each epoch, the bank's blocks (shards, or
pieces of large shards) are put in a random order and grouped into windows of at least
``window_rows`` rows; one window at a time is read into memory, its rows are shuffled,
and minibatches are taken from the windows in turn. Resident memory is one window, not
the bank; with shards of 10,000 rows and windows of 200,000, every minibatch mixes
rows from 20 randomly chosen shards (the bank itself is in random order, as
``vinaflow simulate`` writes it). This is the shuffle-buffer scheme of WebDataset and
``tf.data``, made deterministic: the position is one integer, and epoch ``e``, window
``w`` always hold the same rows in the same order, so a resumed run reads exactly the
minibatches an uninterrupted one would.

Reading a window (a few tens of MB) takes well under a second against hundreds of
training steps per window, so windows are read synchronously.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from vinaflow.errors import ConfigError
from vinaflow.problems.shards import ShardedBank

__all__ = ["InMemoryBatches", "ShardStream"]

Transform = Callable[[Tensor], Tensor]


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for k in keys:
        seed = (seed * 1_000_003 + k) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class InMemoryBatches:
    """Minibatches of tensors in memory: epoch ``e`` uses permutation ``randperm(seed, e)``.

    ``position`` (minibatches drawn so far) is the whole state, so resuming at a step
    reproduces the batches of an uninterrupted run.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int) -> None:
        self.x, self.y = x, y
        self.n, self.batch_size, self.seed = x.shape[0], min(batch_size, x.shape[0]), seed
        self.per_epoch = max(1, self.n // self.batch_size)
        self.position = 0
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _indices(self, position: int) -> Tensor:
        epoch, k = divmod(position, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm[k * self.batch_size : (k + 1) * self.batch_size].to(self.x.device)

    def peek(self) -> tuple[Tensor, Tensor]:
        """The next minibatch ``(x, y)`` without advancing."""
        idx = self._indices(self.position)
        return self.x[idx], self.y[idx]

    def next(self) -> tuple[Tensor, Tensor]:
        batch = self.peek()
        self.position += 1
        return batch


class ShardStream:
    """Minibatches of rows ``start:stop`` of a :class:`ShardedBank`, one window in memory.

    ``y_name`` is the array fed as observations (``y_clean`` under noise augmentation);
    ``transform_x``/``transform_y`` standardise rows as they are read (set by the
    training path once the normalisation is fitted).
    """

    def __init__(
        self,
        bank: ShardedBank,
        start: int,
        stop: int,
        batch_size: int,
        seed: int,
        window_rows: int = 200_000,
        y_name: str = "y",
    ) -> None:
        if not 0 <= start < stop <= len(bank):
            raise ConfigError(f"bank rows {start}:{stop} are not inside 0:{len(bank)}")
        if window_rows < 1:
            raise ConfigError(f"training.shuffle_window must be >= 1, got {window_rows}")
        self.bank, self.start, self.stop, self.seed = bank, start, stop, seed
        self.y_name = y_name
        self.n = stop - start
        self.batch_size = min(batch_size, self.n)
        # Never below a minibatch: a window smaller than the batch would yield nothing.
        self.window_rows = max(window_rows, self.batch_size)
        self.transform_x: Transform | None = None
        self.transform_y: Transform | None = None
        # Blocks of at most window_rows rows, so that one huge shard still splits.
        self.blocks: list[tuple[int, int]] = []
        for shard, a, b in bank.pieces(start, stop):
            base = int(bank.offsets[shard])
            for lo in range(a, b, self.window_rows):
                self.blocks.append((base + lo, base + min(b, lo + self.window_rows)))
        self.position = 0
        self._layout_epoch: int = -1
        self._layout: list[tuple[list[tuple[int, int]], int]] = []
        self._windows: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}

    def set_transforms(self, transform_x: Transform, transform_y: Transform) -> None:
        """Standardise rows with these from now on (windows already read are dropped)."""
        self.transform_x, self.transform_y = transform_x, transform_y
        self._windows.clear()

    @property
    def per_epoch(self) -> int:
        # Every epoch is all n rows in some order, so its length never changes.
        return self.n // self.batch_size

    def _epoch_layout(self, epoch: int) -> list[tuple[list[tuple[int, int]], int]]:
        """Windows of ``epoch``: ``(row ranges, rows)``, from a permutation of the blocks."""
        if epoch != self._layout_epoch:
            order = torch.randperm(len(self.blocks), generator=_generator(self.seed, epoch))
            windows: list[tuple[list[tuple[int, int]], int]] = []
            ranges: list[tuple[int, int]] = []
            rows = 0
            for i in order.tolist():
                a, b = self.blocks[i]
                ranges.append((a, b))
                rows += b - a
                if rows >= self.window_rows:
                    windows.append((ranges, rows))
                    ranges, rows = [], 0
            if ranges:  # the short remainder joins the last window (or is the only one)
                if windows:
                    last, n = windows.pop()
                    windows.append((last + ranges, n + rows))
                else:
                    windows.append((ranges, rows))
            self._layout_epoch, self._layout = epoch, windows
        return self._layout

    def _load(self, epoch: int, w: int) -> tuple[Tensor, Tensor]:
        """Window ``w`` of ``epoch``, read, shuffled and standardised (two kept at most:
        a minibatch may straddle a window boundary)."""
        key = (epoch, w)
        if key not in self._windows:
            while len(self._windows) >= 2:
                self._windows.pop(next(iter(self._windows)))
            ranges, rows = self._epoch_layout(epoch)[w]
            perm = torch.randperm(rows, generator=_generator(self.seed, epoch, w + 1))
            x = torch.from_numpy(self.bank.read_rows("x", ranges))[perm]
            y = torch.from_numpy(self.bank.read_rows(self.y_name, ranges))[perm]
            with torch.no_grad():
                if self.transform_x is not None:
                    x = self.transform_x(x)
                if self.transform_y is not None:
                    y = self.transform_y(y)
            self._windows[key] = (x, y)
        return self._windows[key]

    def peek(self) -> tuple[Tensor, Tensor]:
        """The next minibatch ``(x, y)`` (CPU tensors) without advancing.

        An epoch is its windows one after another; minibatch ``k`` is rows
        ``k*B:(k+1)*B`` of that sequence, and the remainder of ``n // B`` is dropped,
        as with a random permutation in memory.
        """
        epoch, k = divmod(self.position, self.per_epoch)
        lo, hi = k * self.batch_size, (k + 1) * self.batch_size
        xs, ys = [], []
        first = 0
        for w, (_, rows) in enumerate(self._epoch_layout(epoch)):
            a, b = max(lo, first), min(hi, first + rows)
            if a < b:
                x, y = self._load(epoch, w)
                xs.append(x[a - first : b - first])
                ys.append(y[a - first : b - first])
            first += rows
            if first >= hi:
                break
        if len(xs) == 1:
            return xs[0], ys[0]
        return torch.cat(xs), torch.cat(ys)

    def next(self) -> tuple[Tensor, Tensor]:
        batch = self.peek()
        self.position += 1
        return batch

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` rows of ``x`` and the observation array, raw (for normalisation)."""
        n = min(n, self.n)
        return (
            self.bank.read("x", self.start, self.start + n),
            self.bank.read(self.y_name, self.start, self.start + n),
        )
