"""The teacher-embedding cache: hit/miss, corruption, resume, staleness, flips."""

import numpy as np
import torch
from PIL import Image

from samdistill.config import load_config
from samdistill.data.cache import CachedSet, EmbeddingCache, build_cache, content_key
from samdistill.data.datasets import open_dataset


def test_miss_then_hit_and_entries_hold_what_training_needs(tmp_path, tiny_model, synth_folder):
    ds = open_dataset(synth_folder)
    ids = ds.ids("train", 6)
    cache = EmbeddingCache(tmp_path / "c", tiny_model)
    keys = cache.build(ds, ids, progress=False)
    assert (cache.stats.misses, cache.stats.hits) == (6, 0)
    again = EmbeddingCache(tmp_path / "c", tiny_model)
    assert again.build(ds, ids, progress=False) == keys and (again.stats.hits, again.stats.misses) == (6, 0)
    entry = again.read(keys[(ids[0], False)])
    sample = ds.load(ids[0])
    x = tiny_model.preprocess.image(sample.image)
    assert entry["embedding"].dtype == torch.float16 and entry["embedding"].shape == (256, 16, 16)
    assert torch.allclose(entry["embedding"].float(), tiny_model.encode(x[None])[0], atol=2e-2)
    item = CachedSet(again, [keys[(ids[0], False)]])[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64) and item["mask"].sum() > 0


def test_corrupt_entry_is_detected_counted_and_recomputed(tmp_path, tiny_model, synth_folder):
    ds = open_dataset(synth_folder)
    ids = ds.ids("train", 3)
    cache = EmbeddingCache(tmp_path / "c", tiny_model)
    keys = cache.build(ds, ids, progress=False)
    victim = cache.path(keys[(ids[1], False)])
    victim.write_bytes(victim.read_bytes()[:100])  # torn write
    other = cache.path(keys[(ids[2], False)])
    torch.save({"key": "somebody else", "embedding": torch.zeros(1)}, other)  # wrong entry under this name
    again = EmbeddingCache(tmp_path / "c", tiny_model)
    again.build(ds, ids, progress=False)
    assert (again.stats.corrupt, again.stats.misses, again.stats.hits) == (2, 2, 1)
    assert again.read(keys[(ids[1], False)]) is not None


def test_interrupted_build_resumes(tmp_path, tiny_model, synth_folder):
    ds = open_dataset(synth_folder)
    ids = ds.ids("train")
    EmbeddingCache(tmp_path / "c", tiny_model).build(ds, ids[:5], progress=False)  # "killed" after 5
    resumed = EmbeddingCache(tmp_path / "c", tiny_model)
    resumed.build(ds, ids, progress=False)
    assert (resumed.stats.hits, resumed.stats.misses) == (5, len(ids) - 5)
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_changed_image_or_teacher_never_hits_a_stale_entry(tmp_path, tiny_model, synth_folder):
    from samdistill.models.zoo import load_model

    ds = open_dataset(synth_folder)
    sid = ds.ids("train")[0]
    cache = EmbeddingCache(tmp_path / "c", tiny_model)
    k1 = cache.build(ds, [sid], progress=False)[(sid, False)]
    img_path = synth_folder / "images" / f"{sid}.png"
    arr = np.asarray(Image.open(img_path)).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(img_path)
    cache2 = EmbeddingCache(tmp_path / "c", tiny_model)
    k2 = cache2.build(ds, [sid], progress=False)[(sid, False)]
    assert k1 != k2 and cache2.stats.misses == 1
    other = EmbeddingCache(tmp_path / "c", load_model("test_sam", seed=5))
    assert other.teacher_id != cache.teacher_id
    other.build(ds, [sid], progress=False)
    assert other.stats.misses == 1


def test_flip_entries_are_embeddings_of_the_flipped_image(tmp_path, tiny_model, synth_folder):
    ds = open_dataset(synth_folder)
    sid = ds.ids("train")[0]
    cache = EmbeddingCache(tmp_path / "c", tiny_model)
    keys = cache.build(ds, [sid], flips=True, progress=False)
    assert set(keys) == {(sid, False), (sid, True)}
    plain, flipped = cache.read(keys[(sid, False)]), cache.read(keys[(sid, True)])
    s = ds.load(sid)
    want = tiny_model.encode(tiny_model.preprocess.image(np.ascontiguousarray(s.image[:, ::-1]))[None])[0]
    assert torch.allclose(flipped["embedding"].float(), want, atol=2e-2)
    assert not torch.allclose(flipped["embedding"].float(), plain["embedding"].float().flip(-1), atol=2e-2)
    assert content_key(cache.teacher_id, s.image, s.mask, True) == keys[(sid, True)]


def test_data_labels_reach_the_dataset_distill_opens(tmp_path, tiny_model):
    import numpy as np
    from PIL import Image

    from samdistill.data.synthetic import phantom

    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    m = np.zeros((64, 64), np.uint8)
    m[5:15, 5:15], m[30:50, 30:50] = 1, 2
    for i in range(4):
        Image.fromarray(np.ascontiguousarray(phantom(0, i, 96)[0][:64, :64])).save(tmp_path / "d" / "images" / f"c{i}.png")
        Image.fromarray(m).save(tmp_path / "d" / "masks" / f"c{i}.png")
    cfg = load_config("kdsam", {"teacher": "test_sam", "data": {"path": str(tmp_path / "d"), "labels": [2]},
                                "cache": {"dir": str(tmp_path / "cache")}, "progress": False})
    (tmp_path / "run").mkdir()
    ds, *_ = build_cache(cfg, tiny_model, tmp_path / "run", progress=False)
    assert ds.labels == (2,) and int(ds.load("c0").mask.sum()) == 400
