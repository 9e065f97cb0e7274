"""What to keep of a T2 segmentor's mask, cross-validated over the 12 cases (issue 23).

Reads the four-flip probabilities that `cv_segmentor.py --d2-check --save-probs DIR` kept for every
held-out case (S is not run again) and measures each post-processing variant on them:

- threshold: the probability above which a voxel is lesion (synthesis uses 0.5);
- share: 3D components under this share of the largest are dropped (the recipe's min_component_share);
- floor: components under this volume (mL) are dropped too (an absolute floor: on a brain with
  nothing to remove, the largest false component is otherwise kept, however small);
- holes: then the holes of the mask are filled in each axial slice (a whole tumour has no hole; a
  hole left in the mask stays as it was in the pseudo-normal, a bright spot inside the fill).

Per case: Dice, bright non-tumour tissue called lesion (csf_fp) and healthy-ised brain called lesion
(healthy_fp), as cv_segmentor.py defines them (every other axial slice, so a voxel stands for 2 mm^3
of a 1 mm BraTS case). Table: mean +- SD over the 4 folds, worst case, and cases over issue 23's
bars (bright tissue <= 1 %, healthy-ised <= 0.5 % in every held-out case).

`--nested` also picks the variant per fold on the other three folds' nine cases (fewest cases over
the bars, then the highest mean Dice) and scores it on the fold's own three: a choice not made on
the cases it is judged on.

    python scripts/cv_postprocess.py PROBS_DIR RECORDS_DIR [--nested]

RECORDS_DIR: cv_segmentor.py's folder of the recipe (its fold<k>.json say which cases each fold tests).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import dice  # noqa: E402

VOXEL_ML = 2 / 1000          # every other 1 mm slice: a voxel of the judged stack stands for 2 mm^3
BRIGHT_BAR, HEALTHY_BAR = 0.01, 0.005
THRESHOLDS = (0.5, 0.6, 0.7)
SHARES = (0.0, 0.1, 0.2, 0.3)
FLOORS_ML = (0.0, 0.5, 1.0, 2.0)
HOLES = (False, True)


def kept(mask: np.ndarray, share: float, floor_ml: float) -> np.ndarray:
    """mask without its face-connected 3D components under `share` of the largest or `floor_ml`."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = (sizes >= share * sizes.max()) & (sizes * VOXEL_ML >= floor_ml)
    return np.isin(labels, 1 + np.flatnonzero(keep))


def holes_filled(mask: np.ndarray) -> np.ndarray:
    """`mask` with the holes of each axial slice (axis 0: the judged slices) filled."""
    return np.stack([ndimage.binary_fill_holes(m) for m in mask]) if mask.any() else mask


def measure(case: dict, threshold: float, share: float, floor_ml: float, holes: bool = False) -> dict:
    post = (lambda m: holes_filled(kept(m, share, floor_ml))) if holes else (lambda m: kept(m, share, floor_ml))
    pred = post(case["p"] > threshold)
    healthy = case["p"] > threshold
    healthy[case["tumour_slices"]] = case["p_healthy"] > threshold
    healthy = post(healthy)
    return {"dice": dice(pred, case["truth"]), "csf_fp": float(pred[case["bright"]].mean()),
            "healthy_fp": float(healthy[case["counted"]].mean())}


def over_bars(m: dict) -> int:
    return int(m["csf_fp"] > BRIGHT_BAR) + int(m["healthy_fp"] > HEALTHY_BAR)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probs")
    ap.add_argument("records")
    ap.add_argument("--nested", action="store_true")
    ap.add_argument("--holes", action="store_true", help="also each variant with in-slice holes filled")
    args = ap.parse_args(argv)
    files = sorted(Path(args.probs).glob("*.npz"))
    fold_of = {i: int(f.stem[4:]) for f in Path(args.records).glob("fold*.json")
               for i in json.loads(f.read_text())["test"]}
    cases = {f.stem: dict(np.load(f)) for f in files if f.stem in fold_of}
    for c in cases.values():
        c["p"], c["p_healthy"] = c["p"].astype(np.float32), c["p_healthy"].astype(np.float32)
    variants = list(itertools.product(THRESHOLDS, SHARES, FLOORS_ML, HOLES if args.holes else (False,)))
    results = {v: {i: measure(c, *v) for i, c in cases.items()} for v in variants}
    fold_ids = sorted(set(fold_of[i] for i in cases))
    n_folds = len(fold_ids)
    print(f"{len(cases)} cases, {n_folds} folds; mean +- SD over folds of the fold means; "
          f"bright / healthy-ised in %")
    print("| threshold | share | floor (mL) | holes filled | dice | bright tissue | healthy-ised | worst bright "
          "| worst healthy-ised | cases over a bar |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, per_case in results.items():
        row = []
        for key, scale in (("dice", 1), ("csf_fp", 100), ("healthy_fp", 100)):
            fold_means = [np.mean([m[key] for i, m in per_case.items() if fold_of[i] == k]) * scale
                          for k in fold_ids]
            row.append(f"{np.mean(fold_means):.3f} +- {np.std(fold_means):.3f}")
        worst = [max(m[key] for m in per_case.values()) * 100 for key in ("csf_fp", "healthy_fp")]
        over = sum(over_bars(m) > 0 for m in per_case.values())
        print(f"| {v[0]} | {v[1]} | {v[2]} | {'yes' if v[3] else 'no'} | " + " | ".join(row) + f" | {worst[0]:.2f} | {worst[1]:.2f} | {over} |")
    if args.nested:
        print("\nnested: each fold's variant chosen on the other folds' cases")
        chosen = []
        for k in fold_ids:
            def score(v):
                others = [m for i, m in results[v].items() if fold_of[i] != k]
                return (-sum(over_bars(m) > 0 for m in others), np.mean([m["dice"] for m in others]))
            best = max(variants, key=score)
            own = [m for i, m in results[best].items() if fold_of[i] == k]
            chosen.append(own)
            print(f"fold {k}: threshold {best[0]}, share {best[1]}, floor {best[2]} mL, holes filled {best[3]}: Dice "
                  f"{np.mean([m['dice'] for m in own]):.3f}, worst bright {100 * max(m['csf_fp'] for m in own):.2f} %, "
                  f"worst healthy-ised {100 * max(m['healthy_fp'] for m in own):.2f} %")
        fold_dice = [np.mean([m["dice"] for m in own]) for own in chosen]
        print(f"nested Dice {np.mean(fold_dice):.3f} +- {np.std(fold_dice):.3f}; cases over a bar: "
              f"{sum(over_bars(m) > 0 for own in chosen for m in own)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
