"""Claim: KD SAM distills LiteMedSAM into a student that keeps its Dice at a fraction of its cost.

For each dataset: `samdistill distill` (recipe kdsam + the overrides below) on the train split,
then, in this same process, `samdistill eval` of teacher and student on the same test split (tight
box), batch-1 CPU latency of both timed back to back (3 warm-up, median of 20), MACs and parameters,
and the ratios. It also times a stage-1 epoch's worth of steps with the warm cache against the
same steps with the teacher run on each image (no cache). Writes
benchmarks/results/kdsam_<dataset>.{json,md} (`kdsam_<dataset>_<student>.*` for a --student other than
the recipe's default; targets: Dice >= teacher - 0.03, >= 10x fewer encoder MACs, >= 5x lower
encoder+decoder latency, training within 2 h on this machine; cache >= 10x).

    python benchmarks/kdsam.py --datasets kvasir_seg hc18 busi --threads 2

`--speed-only` times only the stage-1 steps, with and without the cache, for each student family
(random init) and writes benchmarks/results/kdsam_cache_speed.{json,md}:

    python benchmarks/kdsam.py --speed-only --threads 2

`--device cuda` trains and evaluates on the GPU and writes `kdsam_<dataset>[_<student>]_gpu.*` with the
training throughput (images/s of each stage, from the run's metrics.csv) and the cache speed-up there;
CPU latency is not measured in that mode (the CPU results file has it):

    SAMDISTILL_SHARED_DATA=/data python benchmarks/kdsam.py --device cuda --datasets kvasir_seg
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import (RESULTS, data_note, device_tag, markdown_table, render_only, shared_dataset, throughput,
                     write_results)

# Stage 1 of mobilenetv4_conv_small (the default) needs optimiser steps: on Kvasir-SEG's 700 train images 8 epochs
# (704 steps) never decoded, the recipe's 20 (1760) did, so Kvasir-SEG runs the recipe's epochs. The smaller sets
# get about as many stage-1 steps: HC18 (280 images) 30 + 8 (1050 steps); BUSI (270) 50 + 20 (1700 steps; best
# val Dice came in stage-2 epoch 4, so stage 2 could be shorter). resnet18 (the earlier default) used kvasir_seg
# (8, 6), hc18 (6, 5), busi (20, 15): give --stage1-epochs/--stage2-epochs.
EPOCHS = {"hc18": (30, 8), "busi": (50, 20)}


def cache_speedup(cfg, teacher, student, n: int = 16) -> dict:
    """Seconds per image of stage-1 steps: warm cache vs. running the teacher on each image.

    Each path first runs one untimed batch (allocator and oneDNN set-up), then ``n`` timed images.
    """
    from samdistill.methods.kdsam import Stage1Config
    from samdistill.data.cache import CachedSet, EmbeddingCache
    from samdistill.data.datasets import open_dataset
    from samdistill.eval.efficiency import sync
    from samdistill.losses.perceptual import DecoderPerceptual
    from samdistill.methods.kdsam import KDSAMStage
    from samdistill.train.trainer import collate

    ds = open_dataset(cfg.data.path)
    s1: Stage1Config = cfg.stage1
    bs = s1.batch_size
    ids = ds.ids("train", n + bs)
    cache = EmbeddingCache(cfg.cache.dir, teacher)
    keys = list(cache.build(ds, ids, progress=False).values())
    dev = cfg.device
    method = KDSAMStage(stage=1, student=student, teacher=teacher, cfg=s1,
                        perceptual=DecoderPerceptual(teacher).to(dev) if s1.perceptual > 0 else None, device=dev)
    opt = torch.optim.AdamW(method.parameters(), lr=1e-5)
    method.train()

    def run_steps(get_items) -> float:
        for i in range(0, len(ids), bs):
            if i == bs:  # the first batch warms up
                sync(dev)
                t0 = time.perf_counter()
            batch = collate(get_items(ids[i : i + bs], keys[i : i + bs]))
            loss = method.step(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync(dev)
        return (time.perf_counter() - t0) / (len(ids) - bs)

    cached = CachedSet(cache, keys, in_memory=True)
    _ = [cached[i] for i in range(len(keys))]  # warm: an epoch after the first reads from memory
    pos = {k: i for i, k in enumerate(keys)}
    warm = run_steps(lambda sids, ks: [cached[pos[k]] for k in ks])

    @torch.no_grad()
    def uncached_items(sids, ks):
        items = []
        for sid in sids:
            s = ds.load(sid)  # read + decode the image from disk
            x = teacher.preprocess.image(s.image).to(dev)
            emb = teacher.encode(x[None])[0]
            items.append({"image": x, "embedding": emb, "mask": teacher.preprocess.mask_to_input(s.mask), "id": sid})
        return items

    cold = run_steps(uncached_items)
    return {"n_images": len(ids) - bs, "seconds_per_image_warm_cache": warm, "seconds_per_image_no_cache": cold,
            "speedup": cold / warm, "perceptual_weight": s1.perceptual}


def stem(dataset: str, args) -> str:
    """``kdsam_<dataset>`` for the recipe's default student, ``kdsam_<dataset>_<student>`` for any other, then
    ``_neck<W>`` for a non-default neck width and ``_gpu`` for a GPU run."""
    s = f"kdsam_{dataset}" if args.student == args.default_student else f"kdsam_{dataset}_{args.student}"
    return s + neck_tag(args) + device_tag(args.device)


def neck_tag(args) -> str:
    """``_neck<W>`` for a non-default neck width (its own run dirs and results files), else ``''``."""
    return f"_neck{args.neck_width}" if args.neck_width else ""


def given(**kv) -> dict:
    """The overrides that were given; a ``None`` leaves the recipe's value."""
    return {k: v for k, v in kv.items() if v is not None}


def run_dataset(name: str, args) -> dict:
    from samdistill.api import distill, evaluate_model
    from samdistill.config import load_config
    from samdistill.eval.efficiency import latency_pair
    from samdistill.models.zoo import load_model

    s1, s2 = (args.stage1_epochs, args.stage2_epochs) if args.stage1_epochs is not None else EPOCHS.get(name, (None, None))
    data = shared_dataset(name)
    run_dir = RESULTS / "runs" / stem(name, args)
    overrides = {
        "data": {"path": str(data)}, "student": {"name": args.student, "neck_width": args.neck_width},
        "threads": args.threads,
        "cache": {"dir": str(RESULTS / "runs" / ".cache")},
        "stage1": given(epochs=s1, perceptual=args.perceptual), "stage2": given(epochs=s2, box_jitter=args.box_jitter),
        "progress": not args.quiet, "device": args.device,
    }
    cfg = load_config("kdsam", overrides)
    t0 = time.time()
    run = distill(cfg, run_dir, resume="auto")  # a run finished with this config is read (its wall time: its own)
    distill_s = run["total_seconds"] if run.get("already_finished") else time.time() - t0

    teacher = load_model("litemedsam", device=args.device)
    student = load_model(run_dir / "student.pt", device=args.device)
    ev = {}
    for role, model in (("teacher", "litemedsam"), ("student", str(run_dir / "student.pt"))):
        ev[role] = evaluate_model(model, data, out_dir=run_dir / "eval" / role, split="test", force=True, threads=args.threads,
                                  progress=not args.quiet, device=args.device)
    speed = cache_speedup(cfg, teacher, student, n=16 if args.device == "cpu" else 128)
    t, s = ev["teacher"], ev["student"]
    result = {"dataset": name, "student": args.student, "config": cfg.model_dump(mode="json"),
              "distill": {k: run[k] for k in ("best", "steps", "cache", "train_seconds", "total_seconds",
                                             "n_train_images", "n_val")},
              "distill_wall_seconds": distill_s, "eval": {"teacher": t, "student": s}, "cache_speed": speed,
              "threads": args.threads, "machine": t["machine"]}
    if args.device != "cpu":  # GPU mode: training throughput; CPU latency is the CPU results file's business
        return {**result, "device": args.device, "data_note": data_note(data), "throughput": throughput(run_dir),
                "ratios": {"encoder_macs": t["encoder_gmacs"] / s["encoder_gmacs"],
                           "params": t["params"]["total"] / s["params"]["total"]}}
    lat = latency_pair(teacher, student, threads=args.threads)
    ratios = {
        "encoder_macs": t["encoder_gmacs"] / s["encoder_gmacs"],
        "total_macs": (t["encoder_gmacs"] + t["decoder_gmacs"]) / (s["encoder_gmacs"] + s["decoder_gmacs"]),
        "params": t["params"]["total"] / s["params"]["total"],
        "latency_encoder_plus_decoder": lat["ratio"]["encoder_plus_decoder_ms"],
        "latency_end_to_end_eval": t["latency"]["end_to_end_ms"] / s["latency"]["end_to_end_ms"],
    }
    targets = {
        "dice_within_0.03": s["dice"] >= t["dice"] - 0.03,
        "encoder_macs_10x": ratios["encoder_macs"] >= 10,
        "latency_5x": ratios["latency_encoder_plus_decoder"] >= 5,
        "trained_within_2h": distill_s <= 7200,
        "cache_10x": speed["speedup"] >= 10,
    }
    return {**result, "latency_back_to_back": lat, "ratios": ratios, "targets": targets}


def gpu_markdown(r: dict) -> str:
    t, s = r["eval"]["teacher"], r["eval"]["student"]
    c, d, sp = r["config"], r["distill"], r["cache_speed"]
    m = r["machine"]
    lines = [
        f"# KD SAM on {r['dataset']} on a GPU: LiteMedSAM -> {r['student']}\n",
        f"Device: {m.get('cuda')} ({r['device']}, bf16 autocast), host CPU {m['cpu']} ({m['cores']} cores), torch "
        f"{m['torch']}. Data: {r['data_note'] or 'the shared dataset'}\n",
        markdown_table([[phase, x["epochs"], f"{x['images']:.0f}", f"{x['train_seconds']:.1f}", f"{x['images_per_s']:.0f}",
                         f"{x['first_epoch_images_per_s']:.0f}",
                         f"{x['later_epochs_images_per_s']:.0f}" if x["later_epochs_images_per_s"] else "-"]
                        for phase, x in r["throughput"].items()],
                       ["phase", "epochs", "images", "train s", "images/s (all epochs)", "first epoch", "later epochs"]),
        "",
        f"Batch {c['stage1']['batch_size']} (stage 1) / {c['stage2']['batch_size']} (stage 2), as on the CPU; images/s "
        "counts training steps only (validation excluded; each step reads the in-memory cache).",
        f"Cache: {d['cache']['misses']} embeddings computed in {d['cache']['seconds']:.1f} s "
        f"({d['cache']['hits']} already cached). Distill wall time {r['distill_wall_seconds']:.1f} s (cache + training "
        f"+ validation), training {d['train_seconds']:.1f} s; best val Dice {d['best']['dice']:.4f} "
        f"({d['best']['phase']} epoch {d['best']['epoch']}).",
        f"Stage-1 steps with warm cache {sp['seconds_per_image_warm_cache'] * 1e3:.2f} ms/image vs. teacher run per "
        f"image {sp['seconds_per_image_no_cache'] * 1e3:.2f} ms/image -> {sp['speedup']:.1f}x (n={sp['n_images']}).\n",
        markdown_table([[name, f"{e['dice']:.4f}", f"{e['iou']:.4f}", f"{e['hd95']:.2f}", f"{e['params']['total'] / 1e6:.2f}",
                         f"{e['encoder_gmacs']:.2f}"] for name, e in (("teacher litemedsam", t), (f"student {r['student']}", s))],
                       ["model", "test Dice", "IoU", "HD95 px", "params M", "enc GMACs"]),
        "",
        f"Test split n={s['n']}, tight box. Dice gap {s['dice'] - t['dice']:+.4f}; encoder MACs "
        f"{r['ratios']['encoder_macs']:.1f}x fewer.",
    ]
    return "\n".join(lines) + "\n"


def markdown(r: dict) -> str:
    if r.get("device", "cpu") != "cpu":
        return gpu_markdown(r)
    t, s = r["eval"]["teacher"], r["eval"]["student"]
    lt, ls = r["latency_back_to_back"]["teacher"], r["latency_back_to_back"]["student"]
    ra, sp, tg = r["ratios"], r["cache_speed"], r["targets"]
    c = r["config"]
    def row(name: str, e: dict, lat: dict) -> list[str]:
        return [name, f"{e['dice']:.4f}", f"{e['iou']:.4f}", f"{e['hd95']:.2f}", f"{e['params']['total'] / 1e6:.2f}",
                f"{e['encoder_gmacs']:.2f}", f"{e['encoder_gmacs'] + e['decoder_gmacs']:.2f}", f"{lat['encoder_ms']:.1f}",
                f"{lat['decoder_ms']:.1f}", f"{e['latency']['end_to_end_ms']:.1f}"]

    def prompt_only(name: str, x: dict) -> list[str]:
        return [name, f"{x['dice']:.4f}", f"{x['iou']:.4f}"] + [""] * 7

    b = t["baselines"]
    lines = [
        f"# KD SAM on {r['dataset']}: LiteMedSAM -> {r['student']}\n",
        f"Test split, n={s['n']} images, tight box from the ground truth; metrics at the original resolution.\n",
        markdown_table([row("teacher litemedsam", t, lt), row(f"student {r['student']}", s, ls),
                        prompt_only("ellipse in box (prompt only)", b["box_ellipse"]),
                        prompt_only("filled box (prompt only)", b["box_filled"])],
                       ["model", "Dice", "IoU", "HD95 px", "params M", "enc GMACs", "total GMACs (1 prompt)", "enc ms",
                        "dec ms", "end-to-end ms (eval)"]),
        "",
        f"Ratios teacher/student: encoder MACs {ra['encoder_macs']:.1f}x, total MACs {ra['total_macs']:.1f}x, params "
        f"{ra['params']:.1f}x, encoder+decoder latency {ra['latency_encoder_plus_decoder']:.1f}x (batch 1, back to back, "
        f"median of 20), end-to-end eval latency {ra['latency_end_to_end_eval']:.1f}x.",
        f"Dice gap: {s['dice'] - t['dice']:+.4f}.\n",
        f"Training: {r['distill']['n_train_images']} train images, stage 1 {c['stage1']['epochs']} epochs "
        f"(MSE {c['stage1']['mse']}, perceptual {c['stage1']['perceptual']}), stage 2 {c['stage2']['epochs']} epochs "
        f"(Dice {c['stage2']['dice']}, BCE {c['stage2']['bce']}, KD {c['stage2']['kd']}, IoU {c['stage2']['iou']}, "
        f"MSE {c['stage2']['mse']}, box jitter {c['stage2']['box_jitter']} px); random-init backbone (no ImageNet "
        f"weights here). Cache: {r['distill']['cache']['misses']} embeddings computed in "
        f"{r['distill']['cache']['seconds'] / 60:.1f} min ({r['distill']['cache']['hits']} already cached). "
        f"Distill wall time {r['distill_wall_seconds'] / 60:.1f} min (cache + training), training alone "
        f"{r['distill']['train_seconds'] / 60:.1f} min; best val Dice {r['distill']['best']['dice']:.4f} "
        f"({r['distill']['best']['phase']} epoch {r['distill']['best']['epoch']}).\n",
        f"Stage-1 steps with warm cache: {sp['seconds_per_image_warm_cache'] * 1e3:.0f} ms/image; with the teacher run "
        f"per image instead: {sp['seconds_per_image_no_cache'] * 1e3:.0f} ms/image -> {sp['speedup']:.1f}x "
        f"(n={sp['n_images']}).\n",
        "Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in tg.items()) + ".\n",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['threads']} torch threads, CPU only, "
        f"torch {r['machine']['torch']}.",
    ]
    return "\n".join(lines) + "\n"


def speed_table(args) -> dict:
    """Stage-1 cache speed-up of each student family (random init: a step's time does not depend on weights)."""
    from samdistill.config import load_config
    from samdistill.machine import machine_info, num_threads
    from samdistill.models.zoo import load_model

    name = args.datasets[0]
    cfg = load_config("kdsam", {"data": {"path": str(shared_dataset(name))}, "threads": args.threads,
                                "cache": {"dir": str(RESULTS / "runs" / ".cache")},
                                "stage1": {"perceptual": args.perceptual}})
    recipe = load_config("kdsam")  # the recipe as a user runs it
    teacher = load_model("litemedsam")
    runs = [(fam, fam, cfg) for fam in args.students]
    if recipe.stage1.perceptual != cfg.stage1.perceptual:  # the default student as a user runs it, too
        runs.append((f"{recipe.student.name}, recipe perceptual {recipe.stage1.perceptual}", recipe.student.name,
                     cfg.model_copy(update={"stage1": recipe.stage1})))
    rows = {}
    with num_threads(args.threads):
        for label, fam, c in runs:
            torch.manual_seed(0)
            student = load_model(fam, teacher=teacher, neck_width=args.neck_width)
            rows[label] = cache_speedup(c, teacher, student)
            print(f"{label}: {rows[label]['speedup']:.1f}x", flush=True)
    return {"dataset": name, "default_student": recipe.student.name, "rows": rows,
            "threads": args.threads, "batch_size": cfg.stage1.batch_size, "neck_width": args.neck_width,
            "machine": machine_info()}


def speed_markdown(r: dict) -> str:
    lines = [
        f"# KD SAM stage-1 steps: warm embedding cache vs. teacher run per image ({r['dataset']})\n",
        f"Each row: {next(iter(r['rows'].values()))['n_images']} timed train images (after one untimed batch), batch "
        f"{r['batch_size']}, stage-1 steps (student encoder forward + backward + AdamW; perceptual weight as in "
        "the table: the benchmark trains with 0, the recipe's default is 0.1) fed from the in-memory warm cache, "
        "then the same steps "
        "with each image read, decoded and encoded by the LiteMedSAM teacher first. Random-init students (the time "
        "of a step does not depend on the weights). Neck width: "
        + (f"{r['neck_width']} for every student" if r.get("neck_width") else "each family's default") + ".\n",
        markdown_table([[fam + (" (default)" if fam == r["default_student"] else ""), x["perceptual_weight"],
                         f"{x['seconds_per_image_warm_cache'] * 1e3:.0f}", f"{x['seconds_per_image_no_cache'] * 1e3:.0f}",
                         f"{x['speedup']:.1f}x", "met" if x["speedup"] >= 10 else "NOT met"] for fam, x in r["rows"].items()],
                       ["student", "perceptual weight", "warm cache ms/image", "no cache ms/image", "speed-up", ">= 10x"]),
    ]
    m = r["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {r['threads']} torch threads, CPU only, torch {m['torch']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["kvasir_seg"])
    ap.add_argument("--student", default=None, help="student family (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stage1-epochs", type=int, default=None)
    ap.add_argument("--stage2-epochs", type=int, default=None)
    ap.add_argument("--perceptual", type=float, default=0.0,
                    help="stage-1 perceptual weight (default 0 here: it triples stage-1 step cost on 2 cores)")
    ap.add_argument("--neck-width", type=int, default=None,
                    help="student.neck_width (default: the family's; a non-default width writes *_neck<W> files)")
    ap.add_argument("--box-jitter", type=float, default=None,
                    help="stage2.box_jitter in px at the model's input (default: the recipe's)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (cuda: GPU training throughput, *_gpu results)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="only time stage-1 steps with and without the cache for each of --students (first dataset); "
                         "writes kdsam_cache_speed.json/.md")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite every results/kdsam_*.md from its .json (no training, no timing)")
    ap.add_argument("--students", nargs="+",
                    default=["resnet50", "resnet18", "tinyvit_5m", "repvit_m0_9", "mobilenetv4_conv_small",
                             "efficientvit_b0"])
    args = ap.parse_args()
    if args.render_only:
        stems = sorted(p.stem for p in RESULTS.glob("kdsam_*.json"))
        render_only([x for x in stems if x.startswith("kdsam_cache_speed")], speed_markdown)
        render_only([x for x in stems if not x.startswith("kdsam_cache_speed")], markdown)
        return
    from samdistill.config import load_config

    args.default_student = load_config("kdsam").student.name  # the recipe is read once
    args.student = args.student or args.default_student
    if args.speed_only:
        r = speed_table(args)
        write_results("kdsam_cache_speed" + neck_tag(args), r, speed_markdown(r))
        return
    if args.stage1_epochs is not None and args.stage2_epochs is None:
        ap.error("give --stage2-epochs with --stage1-epochs")
    for name in args.datasets:
        r = run_dataset(name, args)
        write_results(stem(name, args), r, markdown(r))


if __name__ == "__main__":
    main()
