"""How much tumour a model's pseudo-normal leaves, and how much far brain it changes, on every
labelled case of a folder (docs/fill-cv.md, fourth stage; demo_healthiness.py does one demo).

Per case: synthesis from the T2 (no mask), then the model's own S on the pseudo-normal.
h = 1 - (expert tumour voxels S marks again) / (expert tumour voxels); far changed = brain voxels
more than 4 voxels from the expert tumour whose value changed by more than 1 % of the brain's
V99.5, over all such voxels. Mean +- SD over the 4 folds of cv_segmentor.py (each fold the mean of
its 3 cases). The model's S may have seen the cases in training: it judges every model alike.

    python scripts/healthiness_cases.py MODEL DATA_DIR --out RECORD.json
    python scripts/healthiness_cases.py --summary RECORD.json [RECORD2.json ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import folds  # noqa: E402  (the same folds)

from smilecore.cases import find_cases  # noqa: E402
from smilecore.modelfile import load_model  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402


def judge(model, case) -> dict:
    image = nib.load(case.image("t2"))
    t2 = np.asarray(image.dataobj, np.float32)
    tumour = np.asarray(nib.load(case.seg).dataobj) > 0
    t0 = time.time()
    result = synthesize(t2, image.affine, model, notify=lambda m: None)
    again = synthesize(result.pseudo_normal, image.affine, model, notify=lambda m: None).lesion_mask > 0
    brain = t2 > 0
    far = brain & (ndimage.distance_transform_edt(~tumour) > 4)
    changed = (np.abs(result.pseudo_normal - t2) > 0.01 * np.percentile(t2[brain], 99.5)) & far
    return {"h": 1 - float((again & tumour).sum() / tumour.sum()), "far_changed": float(changed.sum() / far.sum()),
            "seconds": round(time.time() - t0)}


def summary(paths) -> str:
    lines = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        cases = record["cases"]
        for key in ("h", "far_changed"):
            per_fold = [np.mean([cases[c][key] for c in fold]) for fold in folds(sorted(cases))]
            worst = (min if key == "h" else max)(cases[c][key] for c in cases)
            lines.append(f"{Path(record['model']).name} {key}: {np.mean(per_fold):.3f} +- {np.std(per_fold):.3f} "
                         f"over folds, worst case {worst:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--out")
    ap.add_argument("--cases", default="", help="only these case ids (comma-separated)")
    ap.add_argument("--summary", nargs="+", help="print the fold summary of these records and stop")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return 0
    torch.set_num_threads(1)
    model = load_model(args.model)
    record = {"model": args.model, "cases": {}}
    only = set(filter(None, args.cases.split(",")))
    for case in (c for c in find_cases(args.data_dir, require=True) if c.labeled and (not only or c.case_id in only)):
        record["cases"][case.case_id] = judge(model, case)
        print(case.case_id, record["cases"][case.case_id], flush=True)
        Path(args.out).write_text(json.dumps(record, indent=1))
    if not only:
        print(summary([args.out]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
