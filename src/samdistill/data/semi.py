"""Semi-supervised data: which training images keep their labels, and batches of labeled + unlabeled.

``labeled=0.1`` (a fraction; 1 = all) or ``labeled=145`` (a count > 1) picks a seeded subset of the train
split; the rest is used without labels. :class:`TwoStreamBatchSampler` makes each batch
``labeled_bs`` labeled + ``batch_size - labeled_bs`` unlabeled indices: one epoch is one pass over
the unlabeled images while the labeled ones cycle (reshuffled each cycle).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from samdistill.errors import UserError


def pick_labeled(ids: Sequence[str], labeled: float, seed: int = 0) -> list[str]:
    """Seeded subset of ``ids``: ``labeled <= 1`` is a fraction (1 = all), ``labeled > 1`` a count."""
    ids = sorted(ids)
    if labeled <= 0 or (labeled > 1 and labeled != int(labeled)):
        raise UserError(f"labeled must be a fraction in (0, 1] or a whole count > 1, got {labeled}")
    n = max(1, round(len(ids) * labeled)) if labeled <= 1 else int(labeled)
    if n > len(ids):
        raise UserError(f"asked for {n} labeled images but the train split has only {len(ids)}")
    return sorted(random.Random(seed).sample(ids, n))


class TwoStreamBatchSampler(Sampler[list[int]]):
    """Batches of ``labeled_bs`` labeled then the rest unlabeled indices (all labeled when there is
    no unlabeled index). Deterministic given ``generator``."""

    def __init__(self, labeled: Sequence[int], unlabeled: Sequence[int], batch_size: int, labeled_bs: int,
                 generator: torch.Generator | None = None) -> None:
        if not labeled:
            raise UserError("semi-supervised training needs at least one labeled image")
        if unlabeled and not 0 < labeled_bs < batch_size:
            raise UserError(f"labeled_bs must be in [1, batch_size) when unlabeled images exist, got {labeled_bs}")
        self.labeled, self.unlabeled = list(labeled), list(unlabeled)
        self.batch_size, self.labeled_bs = batch_size, labeled_bs if unlabeled else batch_size
        self.generator = generator

    def _perm(self, items: list[int]) -> list[int]:
        return [items[i] for i in torch.randperm(len(items), generator=self.generator).tolist()]

    def __len__(self) -> int:
        if not self.unlabeled:
            return math.ceil(len(self.labeled) / self.batch_size)
        return max(1, len(self.unlabeled) // (self.batch_size - self.labeled_bs))

    def __iter__(self) -> Iterator[list[int]]:
        if not self.unlabeled:
            order = self._perm(self.labeled)
            for i in range(0, len(order), self.batch_size):
                yield order[i : i + self.batch_size]
            return
        ubs = self.batch_size - self.labeled_bs
        unl = self._perm(self.unlabeled)
        lab: list[int] = []
        for b in range(len(self)):
            while len(lab) < self.labeled_bs:
                lab += self._perm(self.labeled)
            take, lab = lab[: self.labeled_bs], lab[self.labeled_bs :]
            chunk = unl[b * ubs : (b + 1) * ubs]
            if len(chunk) < ubs:  # fewer unlabeled than one batch: wrap around
                chunk = (chunk + unl)[:ubs]
            yield take + chunk


class SemiSet(Dataset):
    """Wraps a training set; items get ``labeled`` (bool tensor) and unlabeled items lose their mask
    (zeros), so no code path can learn from a label it should not see."""

    def __init__(self, base: Dataset, labeled_flags: Sequence[bool]) -> None:
        self.base, self.flags = base, list(labeled_flags)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["labeled"] = torch.tensor(self.flags[i])
        if not self.flags[i]:
            item["mask"] = torch.zeros_like(item["mask"])
        return item

    @property
    def labeled_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.flags) if f]

    @property
    def unlabeled_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.flags) if not f]


def semi_train_set(base: Callable[[list[str]], Dataset], train_keys: Mapping[tuple[str, bool], str], labeled: float,
                   *, unlabeled: bool = True, seed: int = 0,
                   unlabeled_keys: Mapping[tuple[str, bool], str] | None = None) -> tuple[SemiSet, list[str], int]:
    """A run's semi-supervised train set: ``(set, labeled ids, number of unlabeled ids)``.

    ``train_keys``: ``(image id, flipped) -> cache key`` of the train split; ``labeled``: as in
    :func:`pick_labeled` (seeded by ``seed``); ``unlabeled_keys``: the same for images that have no mask at all
    (``data.unlabeled``), unlabeled after the train split's; ``unlabeled=False`` leaves every unlabeled image out
    (the supervised baseline); ``base``: cache keys -> the dataset over them (e.g. a ``CachedSet``)."""
    ids = sorted({sid for sid, _ in train_keys})
    picked = set(pick_labeled(ids, labeled, seed=seed))
    entries = [(sid in picked, key) for (sid, _), key in sorted(train_keys.items())]
    entries += [(False, key) for _, key in sorted((unlabeled_keys or {}).items())]
    entries = [(flag, key) for flag, key in entries if unlabeled or flag]
    train_set = SemiSet(base([key for _, key in entries]), [flag for flag, _ in entries])
    n_extra = len({sid for sid, _ in unlabeled_keys or {}})
    return train_set, sorted(picked), len(ids) - len(picked) + n_extra if unlabeled else 0
