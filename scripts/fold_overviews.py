"""The overview PNG (input | pseudo-normal | lesion | pseudo-abnormal) of each held-out case of one
cross-validation fold, made by the shipped default with that fold's segmentor as its S_t2 (issue 23:
"the overview PNGs of the worst fold's cases"), stacked into one picture with each case's Dice.

    python scripts/fold_overviews.py DATA_DIR CV_DIR --recipe mirror+opposite --fold 0 --rule 0.7,0.1 \
        --out docs/images/worst-fold-overviews.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from healthiness_cases import fold_judges, mask_rule_of  # noqa: E402

from smilecore.cases import find_cases  # noqa: E402
from smilecore.metrics import dice  # noqa: E402
from smilecore.modelfile import default_model_path, load_model  # noqa: E402
from smilecore.networks import T2_NET  # noqa: E402
from smilecore.overview import overview_image, save_png  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402


def stacked(rows: list[tuple[str, Image.Image]]) -> Image.Image:
    """The rows one under the other, each with its caption line above it."""
    caption = 16
    width = max(image.width for _, image in rows)
    canvas = Image.new("RGB", (width, sum(image.height + caption for _, image in rows)), "black")
    draw, y = ImageDraw.Draw(canvas), 0
    for text, image in rows:
        draw.text((4, y + 2), text, fill="yellow")
        canvas.paste(image, (0, y + caption))
        y += image.height + caption
    return canvas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("cv_dir")
    ap.add_argument("--recipe", default="mirror+opposite")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--rule", default=None, help="threshold,share of S_t2's mask (default: the default model's)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_path = str(default_model_path())
    rule = mask_rule_of(load_model(model_path), args.rule)
    makers = fold_judges(args.cv_dir, model_path, Path(tempfile.mkdtemp()), args.recipe, rule)
    fold_cases = sorted(c for c, m in makers.items()
                        if m.recipe(T2_NET)["training"].get("fold") == args.fold)
    rows = []
    for case in (c for c in find_cases(args.data_dir) if c.case_id in fold_cases):
        image = nib.load(case.image("t2"))
        t2 = np.asarray(image.dataobj, np.float32)
        result = synthesize(t2, image.affine, makers[case.case_id], notify=lambda m: None)
        score = dice(result.lesion_mask > 0, np.asarray(nib.load(case.seg).dataobj) > 0)
        text = f"{case.case_id} (fold {args.fold}, {args.recipe}, rule {rule}): Dice {score:.3f}"
        print(text, flush=True)
        rows.append((text, overview_image(t2, image.affine, result)))
    save_png(stacked(rows), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
