"""The last step of the bundled default model (scripts/train_default_model.sh): its segmentor S
fine-tuned with resolution augmentation, so that clinical in-plane voxel sizes and thick slices
keep the lesion mask of a 1 mm scan.

An image at 0.5 mm resampled to the model's 1 mm is a blurred copy of a 1 mm image (what the
interpolation to 0.5 mm took away cannot come back), and the default model's S over-segments
blurred images (Dice 0.78 -> 0.74 on the bundled case at 0.5 mm). Here S alone is trained on
the model's own training cases with the expert labels (cross-entropy, BatchNorm statistics
frozen, G and R untouched), each batch degraded half of the time as a scanner or our own
resampling would: down to a coarser grid and back, or up to a finer grid and back (factor 1.2-2.5,
area averaging down, bilinear up). Validation Dice is reported on the model's validation case at
1 mm and at 0.5 mm; the held-out case is not looked at here.

    python scripts/finetune_segmentor.py MODEL DATA_DIR --out NEW_MODEL [--steps 300]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from smilecore.cases import find_cases
from smilecore.dataset import SliceSet, cache_case
from smilecore.losses import L_ce
from smilecore.metrics import dice
from smilecore.modelfile import load_model, model_config, save_model
from smilecore.provenance import file_record, folder_name, provenance
from smilecore.synthesis import synthesize
from smilecore.synthetic import resample_case
from smilecore.volume import NORMALISATIONS, load_label, load_nifti


def degrade(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A batch (N, 1, H, W) as another in-plane voxel size would leave it, half of the time."""
    if rng.random() < 0.5:
        return x
    f = rng.uniform(1.2, 2.5)
    h, w = x.shape[-2:]
    if rng.random() < 0.5:   # acquired coarser: area down, bilinear back
        small = F.interpolate(x, size=(max(1, round(h / f)), max(1, round(w / f))), mode="area")
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    big = F.interpolate(x, size=(round(h * f), round(w * f)), mode="bilinear", align_corners=False)
    return F.interpolate(big, size=(h, w), mode="area")  # interpolated finer, resampled back by synthesis


def validation_dice(model, case) -> tuple[float, float]:
    data, affine, _ = load_nifti(case.image("t2"))
    label = load_label(case.seg, data.shape, affine)
    at_1 = dice(synthesize(data, affine, model, notify=lambda m: None).lesion_mask > 0, label)
    image, lab, aff = resample_case(data, label, affine, 0.5, 1)
    at_05 = dice(synthesize(image, aff, model, notify=lambda m: None).lesion_mask > 0, lab > 0)
    with torch.no_grad():  # synthesis re-lays the weights in inference mode: trainable copies again
        for net in model.nets.values():
            for t in [*net.parameters(), *net.buffers()]:
                t.data = t.data.clone()
    return at_1, at_05


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--check-every", type=int, default=100)
    ap.add_argument("--normalisation", default=None, choices=NORMALISATIONS,
                    help="intensity scaling to fine-tune S on (default: the model's); the file records it")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = load_model(args.model)
    origin = {"model": file_record(args.model), "data_dir": folder_name(args.data_dir),   # no machine paths
              "provenance": provenance("scripts/finetune_segmentor.py", sys.argv[1:] if argv is None else argv)}
    norm = args.normalisation or model.normalisation
    model.config["normalisation"] = model_config(model.config["networks"], model.modality,
                                                 normalisation=norm)["normalisation"]
    split = model.config["training"]["split"]
    cases = {c.case_id: c for c in find_cases(args.data_dir)}
    cache = Path(args.cache_dir or Path(args.out).parent / "cache")
    train = SliceSet([cache_case(cases[i], cache, normalisation=norm) for i in split["train"]], args.crop)
    val = cases[split["val"][0]]
    S = model.nets["S"]
    opt = torch.optim.Adam(S.parameters(), lr=args.lr)
    print("before:", "val Dice 1 mm %.3f, 0.5 mm %.3f" % validation_dice(model, val), flush=True)
    t0, log = time.time(), []
    abnormal = np.nonzero(train.abnormal)[0]
    for step in range(1, args.steps + 1):
        S.train()
        for m in S.modules():  # BatchNorm keeps the statistics the model was trained with
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        picks = [int(rng.choice(abnormal)) if rng.random() < 0.5 else int(rng.integers(len(train)))
                 for _ in range(args.batch_size)]
        items = [train[(i, *train.crop_origin(i, rng))] for i in picks]
        x = degrade(torch.stack([it["image"] for it in items]), rng)
        loss = L_ce(S(x), torch.stack([it["mask"] for it in items]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.append(float(loss.detach()))
        if step % args.check_every == 0 or step == args.steps:
            S.eval()
            d1, d05 = validation_dice(model, val)
            print(f"step {step}: loss {np.mean(log[-args.check_every:]):.4f}; val Dice 1 mm {d1:.3f}, "
                  f"0.5 mm {d05:.3f} ({time.time() - t0:.0f} s)", flush=True)
    S.eval()
    # the file describes today's preprocessing (what the weights were trained on is unchanged on
    # BraTS data: the brain found above the background is the paper's "> 0" there)
    current = model_config(model.config["networks"], model.modality, normalisation=norm)
    config = dict(model.config, normalisation=current["normalisation"],
                  spacing_mm=model.config.get("spacing_mm", current["spacing_mm"]))
    config["training"] = dict(config["training"], segmentor_resolution_finetune={
        "steps": args.steps, "batch_size": args.batch_size, "crop": args.crop, "lr": args.lr, "seed": args.seed,
        "seconds": round(time.time() - t0), **origin})
    save_model(args.out, model.nets, config, half=True)
    print(json.dumps(config["training"]["segmentor_resolution_finetune"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
