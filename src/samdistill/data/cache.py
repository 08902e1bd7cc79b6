"""The teacher-embedding cache: each image's teacher embedding computed once, kept on disk in fp16.

One file per entry, ``<root>/<teacher_id>/<key[:2]>/<key>.pt``, written atomically (temp file, fsync,
rename), so an interrupted build resumes where it stopped and readers need no locks. ``teacher_id``
hashes the teacher family, its weights and its preprocessing; ``key`` hashes ``teacher_id``, the image
and mask contents and the flip. A changed image or teacher therefore never hits a stale entry; a
corrupt file (unreadable, wrong key, wrong shapes) is detected on read, counted, and recomputed.

An entry also holds the preprocessed input image (fp16) and the ground-truth mask in the input frame
(uint8), so training epochs need neither the teacher nor image decoding. Flips are cached as the
teacher's embedding *of the flipped image*, not a flipped embedding.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from samdistill.atomic import atomic_torch_save
from samdistill.data.datasets import SegDataset, open_dataset, open_unlabeled, shared_files
from samdistill.errors import UserError

if TYPE_CHECKING:
    from samdistill.config import DistillConfig


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over parameter/buffer names and bytes, in name order (fast: one pass over memory)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def teacher_id(model) -> str:
    payload = json.dumps(
        {"family": model.family, "weights": weights_hash(model), "preprocess": model.preprocess.to_dict()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def content_key(tid: str, image: np.ndarray, mask: np.ndarray, flip: bool) -> str:
    h = hashlib.sha256()
    h.update(tid.encode())
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    h.update(np.packbits(mask).tobytes())
    h.update(b"flip" if flip else b"orig")
    return h.hexdigest()[:32]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    seconds: float = 0.0
    skipped: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "seconds": self.seconds,
                "skipped": len(self.skipped), "skipped_files": [list(x) for x in self.skipped]}


class EmbeddingCache:
    """Teacher embeddings of one teacher, on disk. ``build`` fills it; ``load`` reads one entry."""

    def __init__(self, root: str | os.PathLike, teacher) -> None:
        self.teacher = teacher
        self.teacher_id = teacher_id(teacher)
        self.dir = Path(root) / self.teacher_id
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "teacher.json"
        if not meta.exists():
            meta.write_text(json.dumps({"family": teacher.family, "preprocess": teacher.preprocess.to_dict()}, indent=1))
        self.index_path = self.dir / "index.json"
        self.stats = CacheStats()
        self.empty_keys: set[str] = set()  # entries whose ground truth is empty (no box prompt possible)

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.pt"

    # ---------------------------------------------------------------- one entry
    def read(self, key: str) -> dict | None:
        """The entry for ``key``, or None when absent; a damaged entry is removed, counted, and None."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
            ok = (
                isinstance(entry, dict)
                and entry.get("key") == key
                and entry["embedding"].dim() == 3
                and entry["embedding"].shape[-1] == self.teacher.embedding_grid
                and entry["image"].shape[-1] == self.teacher.input_size
            )
        except Exception:
            ok = False
        if not ok:
            self.stats.corrupt += 1
            p.unlink(missing_ok=True)
            return None
        return entry

    def write(self, key: str, entry: dict) -> None:
        atomic_torch_save(entry, self.path(key))

    @torch.no_grad()
    def compute(self, sid: str, image: np.ndarray, mask: np.ndarray, flip: bool, key: str) -> dict:
        if flip:
            image, mask = np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1])
        pp = self.teacher.preprocess
        x = pp.image(image)
        emb = self.teacher.encode(x[None].to(self.teacher.device))[0]
        return {
            "key": key,
            "id": sid,
            "flip": flip,
            "hw": list(image.shape[:2]),
            "embedding": emb.to(torch.float16).cpu(),
            "image": x.to(torch.float16),
            "mask": pp.mask_to_input(mask).to(torch.uint8),
        }

    # ---------------------------------------------------------------- many entries
    def build(
        self,
        dataset: SegDataset,
        ids: Iterable[str],
        *,
        flips: bool = False,
        progress: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> dict[tuple[str, bool], str]:
        """Make sure every (id, flip) has an entry; returns ``{(id, flip): key}``. Resumable.

        With ``world_size > 1`` the keys of every id are returned, but this rank computes only the
        missing entries of its own share (every ``world_size``-th id); the caller waits for the other
        ranks (a barrier) before reading theirs.
        """
        ids = list(ids)
        mine = set(ids[rank::world_size])
        keys: dict[tuple[str, bool], str] = {}
        t0 = time.perf_counter()
        bar = tqdm(ids, desc=f"cache {self.teacher.family}", unit="img", disable=not progress)
        for sample in dataset.iter_samples(bar):
            for flip in (False, True) if flips else (False,):
                key = content_key(self.teacher_id, sample.image, sample.mask, flip)
                keys[(sample.id, flip)] = key
                if not sample.mask.any():
                    self.empty_keys.add(key)
                if sample.id not in mine:  # another rank's share
                    continue
                if self.read(key) is not None:
                    self.stats.hits += 1
                    continue
                self.stats.misses += 1
                self.write(key, self.compute(sample.id, sample.image, sample.mask, flip, key))
            bar.set_postfix(hit=self.stats.hits, miss=self.stats.misses)
        self.stats.seconds += time.perf_counter() - t0
        self.stats.skipped += [s for s in dataset.skipped if s not in self.stats.skipped]  # (a dataset's list grows)
        return keys


class CachedSet(torch.utils.data.Dataset):
    """Training items from cache entries: ``{"image": 3xSxS, "embedding": 256xgxg, "mask": SxS, "id"}``.

    Entries are kept in memory after the first read (fp16), so later epochs touch no files.
    """

    def __init__(self, cache: EmbeddingCache, keys: list[str], in_memory: bool = True) -> None:
        self.cache, self.keys, self.in_memory = cache, list(keys), in_memory
        self._mem: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        key = self.keys[i]
        entry = self._mem.get(key)
        if entry is None:
            entry = self.cache.read(key)
            if entry is None:
                raise RuntimeError(f"cache entry {key} vanished or is corrupt; rebuild with `samdistill cache`")
            if self.in_memory:
                self._mem[key] = entry
        return {
            "image": entry["image"].float(),
            "embedding": entry["embedding"].float(),
            "mask": entry["mask"].float(),
            "id": entry["id"],
        }


def default_cache_dir(out_dir: Path) -> Path:
    """``$SAMDISTILL_CACHE``, else ``.samdistill-cache`` beside the run folder (shared by the runs there)."""
    env = os.environ.get("SAMDISTILL_CACHE")
    return Path(env) if env else out_dir.resolve().parent / ".samdistill-cache"


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size under ``torchrun`` (0, 1 without it)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def open_run_dataset(cfg: "DistillConfig") -> SegDataset:
    """The dataset a run's config names (``cfg.data``), opened as the run opens it (``data.zoom``: its samples
    are the crops around their masks' boxes)."""
    ds = open_dataset(cfg.data.path, layout=cfg.data.layout, on_error=cfg.data.on_error,
                      mask_threshold=cfg.data.mask_threshold, labels=cfg.data.labels, seed=cfg.data.seed)
    ds.zoom = cfg.data.zoom
    return ds


def build_cache(cfg: "DistillConfig", teacher, out: Path, progress: bool = True, ds: SegDataset | None = None
                ) -> tuple[SegDataset, EmbeddingCache, dict[tuple[str, bool], str], dict[tuple[str, bool], str], list[str]]:
    """Open a run's dataset (``cfg.data``) and fill its teacher-embedding cache (``cfg.cache``) for the train
    split (with flips when asked) and the validation split: ``(dataset, cache, train_keys, val_keys, val_ids)``.

    The jobs that train from cached embeddings (``distill``, ``nas search``) start here. A seeded split (no
    ``split.json`` in the dataset) is written to ``out/split.json``. Under ``torchrun`` each rank computes its
    share of the missing entries and every rank waits for the others before returning; rank 0 writes.
    """
    rank, world = _rank_and_world()
    ds = ds if ds is not None else open_run_dataset(cfg)  # (distill opens it before the teacher loads)
    train_ids = ds.ids(cfg.data.train_split, cfg.data.limit_train)
    val_ids = ds.ids(cfg.data.val_split, cfg.data.limit_val)
    if not train_ids:
        raise UserError(f"the {cfg.data.train_split!r} split of {ds.name} is empty")
    if ds.split_source.startswith("seeded") and rank == 0:
        (out / "split.json").write_text(json.dumps(ds.split, indent=1))
    cache = EmbeddingCache(Path(cfg.cache.dir) if cfg.cache.dir else default_cache_dir(out), teacher)
    share: dict[str, Any] = {"rank": rank, "world_size": world}
    train_keys = cache.build(ds, train_ids, flips=cfg.cache.flips, progress=progress and rank == 0, **share)
    val_keys = cache.build(ds, val_ids, flips=False, progress=progress and rank == 0, **share)
    if world > 1:  # the other ranks' shares are on disk before anyone reads them
        import torch.distributed as dist

        dist.barrier()
    return ds, cache, train_keys, val_keys, val_ids


def check_unlabeled(cfg: "DistillConfig", labeled: SegDataset | None = None) -> SegDataset | None:
    """The images of ``cfg.data.unlabeled`` (a folder of images without masks) as a dataset, None when unset.
    Refused when one of them is also an image or mask file of ``cfg.data`` (``labeled``, opened when not given;
    the same file or a byte-identical copy): a validation or test image would be trained on, a mask read as an
    image. ``distill`` calls this before the teacher loads, so a wrong folder costs nothing."""
    if not cfg.data.unlabeled:
        return None
    unlabeled = open_unlabeled(cfg.data.unlabeled, on_error=cfg.data.on_error)
    labeled = labeled if labeled is not None else open_run_dataset(cfg)
    shared = shared_files(unlabeled, labeled)
    if shared:
        where = {sid: part for part, ids in labeled.split.items() for sid in ids}
        named = "; ".join(f"{mine} = {theirs} ({kind} of {sid}, {where.get(sid, 'no')} split)"
                          for mine, theirs, kind, sid in shared[:3])
        raise UserError(f"{len(shared)} file(s) of --unlabeled {cfg.data.unlabeled} are also files of --data: {named}"
                        f"{'; ...' if len(shared) > 3 else ''}; leave them out of the unlabeled folder")
    return unlabeled


def build_unlabeled(cfg: "DistillConfig", cache: EmbeddingCache, progress: bool = True) -> dict[tuple[str, bool], str]:
    """Cache entries for the images of ``cfg.data.unlabeled`` (``{}`` when unset), with flips as the train split:
    ``{(id, flipped): key}``. ``distill`` has run :func:`check_unlabeled` on the folder before the teacher loaded,
    so the files are not compared with ``cfg.data`` again here. Under ``torchrun`` each rank computes its share,
    as :func:`build_cache`."""
    if not cfg.data.unlabeled:
        return {}
    unlabeled = open_unlabeled(cfg.data.unlabeled, on_error=cfg.data.on_error)
    rank, world = _rank_and_world()
    keys = cache.build(unlabeled, unlabeled.ids("train"), flips=cfg.cache.flips, progress=progress and rank == 0,
                       rank=rank, world_size=world)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return keys
