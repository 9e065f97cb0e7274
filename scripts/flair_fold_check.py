"""The FLAIR path of `smile synthesize`, checked against cross-validation (issue 23, item 3).

Takes an S_flair that scripts/cv_segmentor.py trained on one fold (recipe mirror+flair, its
weights kept as DIR/mirror+flair/fold<k>.pt), puts it into a copy of a model (the bundled default
unless --model), and synthesises each of the fold's test cases from its T2 with and without its
FLAIR. Prints per case the whole-tumour Dice of the lesion mask: S_flair through synthesis (every
slice, mirrored about the brain's centre), the same with the mirror about the array's centre (as
cv_segmentor mirrors), S alone, and what cv_segmentor recorded for S_flair (every other slice).
The model's S may have seen these cases in its training; S_flair has not. `--coarse-flair K`
instead gives S_flair the FLAIR averaged over K x K x K voxels (a K mm acquisition of BraTS's
1 mm grid), which synthesis resamples back onto the T2's grid. `--rules T:S,...` instead
synthesises each case once with its FLAIR and applies each mask rule (threshold T, parts under S of
the largest dropped: synthesis_segmentor.main_components) to S_flair's lesion probability, printing
per case and rule the Dice and the bright non-tumour tissue marked (metrics.bright_tissue).

    python scripts/flair_fold_check.py CV_DIR DATA_DIR [--fold 0] [--cases 3] [--coarse-flair 2]
    python scripts/flair_fold_check.py CV_DIR DATA_DIR --fold 0 --rules 0.5:0,0.6:0.1 --out RECORD.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from smilecore import synthesis_grid
from smilecore.cases import find_cases
from smilecore.metrics import bright_tissue, dice, share_marked
from smilecore.modelfile import (RECIPE_KEYS, default_model_path, load_model, recipe_channels, save_model,
                                 segmentor_recipe)
from smilecore.networks import FLAIR_NET, RecipeSegmentor
from smilecore.synthesis import synthesize
from smilecore.synthesis_segmentor import main_components
from smilecore.volume import load_label, load_nifti


def model_with_fold(model_path: Path, weights: Path, record: dict, out: Path, role: str = FLAIR_NET):
    """A copy of the model at `model_path` with a fold's segmentor (cv_segmentor's weights and record)
    as its `role`: S_flair (recipe mirror+flair) or S_t2 (recipe mirror), written to `out` and loaded."""
    model = load_model(model_path)
    recipe = segmentor_recipe(("t2", "flair") if role == FLAIR_NET else ("t2",),
                              training={"recipe": record["recipe"], "fold": record["fold"], "cases": record["train"]})
    s = record["settings"]
    sizes = {"in_ch": recipe_channels(recipe), "base": s["base"], "depth": s["depth"], "norm": "batch"}
    net = RecipeSegmentor(**sizes)
    net.unet.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    config = json.loads(json.dumps(model.config))
    config["networks"][role], config[RECIPE_KEYS[role]] = sizes, recipe
    save_model(out, {**model.nets, role: net.eval()}, config)
    return load_model(out)


def coarse(flair: tuple, k: int) -> tuple:
    """(data, affine) averaged over k x k x k voxel blocks: the same field of view at k times the voxel size."""
    data, affine = flair
    n = [s // k for s in data.shape]
    blocks = data[:n[0] * k, :n[1] * k, :n[2] * k].reshape(n[0], k, n[1], k, n[2], k).mean(axis=(1, 3, 5))
    scaled = affine @ np.diag([k, k, k, 1.0])
    scaled[:3, 3] = affine[:3, :3] @ np.full(3, (k - 1) / 2) + affine[:3, 3]   # a block's centre
    return blocks.astype(np.float32), scaled


def record_rules(record: dict, case_id: str, t2, affine, flair, truth, model, rules: str) -> None:
    """Each mask rule (`rules`: threshold:share, ...) applied to one synthesis's S_flair probability."""
    t0 = time.time()
    prob = np.asarray(synthesize(t2, affine, model, flair=flair, notify=lambda m: None).lesion_probability)
    bright = bright_tissue(t2, t2 > 0, truth)
    record["cases"][case_id] = out = {}
    for rule in rules.split(","):
        threshold, share = (float(v) for v in rule.split(":"))
        mask = main_components(prob > threshold, share)   # share 0 keeps every part
        out[rule] = {"dice": dice(mask, truth), "bright_marked": share_marked(mask, bright)}
    print(case_id, {r: {k: round(v, 4) for k, v in f.items()} for r, f in out.items()}, f"({time.time() - t0:.0f} s)",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cv_dir")
    ap.add_argument("data_dir")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--cases", type=int, default=3, help="how many of the fold's test cases")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--coarse-flair", type=int, default=0, help="only S_flair, on the FLAIR at this voxel size (mm)")
    ap.add_argument("--rules", default="", help="mask rules threshold:share to score on one synthesis a case")
    ap.add_argument("--out", default=None, help="with --rules: the per-case record (JSON)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.cv_dir) / "mirror+flair"
    record = json.loads((folder / f"fold{args.fold}.json").read_text())
    recorded = {c["case"]: c["dice"] for c in record["cases"]}
    cases = {c.case_id: c for c in find_cases(args.data_dir, require=True)}
    quiet = {"notify": lambda m: None}
    rules_record = {"fold": args.fold, "rules": args.rules, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = model_with_fold(Path(args.model or default_model_path()), folder / f"fold{args.fold}.pt", record,
                                Path(tmp) / "model.pt")
        for case_id in record["test"][:args.cases]:
            case, t0 = cases[case_id], time.time()
            t2, affine, _ = load_nifti(case.image("t2"))
            flair = load_nifti(case.image("flair"))[:2]
            truth = load_label(case.seg, t2.shape, affine)
            if args.rules:
                record_rules(rules_record, case_id, t2, affine, flair, truth, model, args.rules)
                if args.out:
                    Path(args.out).write_text(json.dumps(rules_record, indent=1))
                continue
            if args.coarse_flair:
                mask = synthesize(t2, affine, model, flair=coarse(flair, args.coarse_flair), **quiet).lesion_mask
                print(f"{case_id}: S_flair on a {args.coarse_flair} mm FLAIR {dice(mask, truth):.3f}; cv_segmentor "
                      f"recorded {recorded[case_id]:.3f} (1 mm, every other slice; {time.time() - t0:.0f} s)", flush=True)
                continue
            brain_centre = synthesize(t2, affine, model, flair=flair, **quiet).lesion_mask > 0
            centre = synthesis_grid.mirror_sum
            synthesis_grid.mirror_sum = lambda brain: brain.shape[0] - 1   # the array's centre, as in CV
            try:
                array_centre = synthesize(t2, affine, model, flair=flair, **quiet).lesion_mask > 0
            finally:
                synthesis_grid.mirror_sum = centre
            t2_only = synthesize(t2, affine, model, **quiet).lesion_mask > 0
            print(f"{case_id}: S_flair {dice(brain_centre, truth):.3f} (mirror about the array's centre "
                  f"{dice(array_centre, truth):.3f}); S alone {dice(t2_only, truth):.3f}; cv_segmentor recorded "
                  f"{recorded[case_id]:.3f} ({time.time() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
