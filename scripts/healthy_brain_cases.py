"""Healthy brains through synthesis: nothing to remove, so nothing may change. Each labelled case
with its tumour replaced by the other hemisphere (the volume flipped left-right, as
cv_segmentor.healthy_ised does to slices; voxels whose mirror is tumour too stay unknown and, with
2 voxels around them, are not counted) is synthesised from its T2 with no mask, once with no reach
(the model's "change_reach_mm" 0), then each reach applied by the engine's own function
(synthesis_blend.kept_near_lesion; `--reach-ps`: S's probabilities that also anchor it). Per case: the share of the counted brain that S's lesion mask
marks, and the share that changed by more than 1 % of V99.5. With `--makers CV_DIR`, each case's
S_t2 is the fold S that held it out (healthiness_cases.fold_judges).

    python scripts/healthy_brain_cases.py MODEL DATA_DIR --out RECORD.json --reaches 0,8 \
        [--makers CV_DIR --maker-recipe mirror+opposite --rule 0.7,0.1]
    python scripts/healthy_brain_cases.py --summary RECORD.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import folds  # noqa: E402
from healthiness_cases import fold_judges, maker_model, maker_options, reach_key, reaches_of  # noqa: E402

from smilecore.cases import find_cases  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402
from smilecore.synthesis_blend import kept_near_lesion, reach_seed  # noqa: E402


def healthy_brain(t2: np.ndarray, tumour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the T2 with its tumour replaced by the left-right mirror, voxels that stay unknown)."""
    return np.where(tumour, t2[::-1], t2), tumour & tumour[::-1]


def judge(model, case, reaches: list[tuple[float, float]]) -> dict:
    image = nib.load(case.image("t2"))
    t2 = np.asarray(image.dataobj, np.float32)
    healthy, unknown = healthy_brain(t2, np.asarray(nib.load(case.seg).dataobj) > 0)
    t0 = time.time()
    model.config["change_reach_mm"] = 0
    result = synthesize(healthy, image.affine, model, notify=lambda m: None)
    brain = healthy > 0
    counted = brain & ~ndimage.binary_dilation(unknown, iterations=2)
    lesion = result.lesion_mask > 0
    spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
    changed = {}
    for reach, p in reaches:
        pn = np.array(result.pseudo_normal, np.float32)
        kept_near_lesion(pn, healthy, reach_seed(lesion, result.lesion_probability, p), spacing, reach)
        moved = np.abs(pn - healthy) > 0.01 * np.percentile(healthy[brain], 99.5)
        changed[reach_key(reach, p)] = float((moved & counted).sum() / counted.sum())
    return {"lesion": float((lesion & counted).sum() / counted.sum()), "changed": changed,
            "unknown_ml": float(unknown.sum()) * float(np.prod(spacing)) / 1000, "seconds": round(time.time() - t0)}


def summary(path: str) -> str:
    cases = json.loads(Path(path).read_text())["cases"]
    order = sorted(cases)
    rows = ["| figure | mean +- SD over folds | worst case |", "|---|---|---|"]
    figures = [("S marks", lambda c: cases[c]["lesion"])] + [
        (f"changed, reach {r.replace('@p', ' mm, p > ') if r != '0' else 'none'}", lambda c, r=r: cases[c]["changed"][r])
        for r in cases[order[0]]["changed"]]
    for name, value in figures:
        per_fold = [np.mean([value(c) for c in fold]) for fold in folds(order)]
        worst = max(order, key=value)
        rows.append(f"| {name} | {100 * np.mean(per_fold):.2f} % +- {100 * np.std(per_fold):.2f} | "
                    f"{100 * value(worst):.2f} % ({worst[8:]}) |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--out")
    maker_options(ap, reaches="0,8", maker_recipe="mirror+opposite")
    ap.add_argument("--summary", help="print the fold summary of this record and stop")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return 0
    model, rule = maker_model(args)
    reaches = reaches_of(args.reaches, args.reach_ps)
    record = {"model": args.model, "makers": args.makers, "maker_recipe": args.maker_recipe if args.makers else None,
              "rule": rule, "reaches": reaches, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        makers = fold_judges(args.makers, args.model, Path(tmp), args.maker_recipe, rule) if args.makers else {}
        for case in (c for c in find_cases(args.data_dir, require=True) if c.labeled):
            record["cases"][case.case_id] = judge(makers.get(case.case_id, model), case, reaches)
            print(case.case_id, record["cases"][case.case_id], flush=True)
            Path(args.out).write_text(json.dumps(record, indent=1))
    print(summary(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
