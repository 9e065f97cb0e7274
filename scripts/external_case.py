"""The default model on a scan from another source, against a reference segmentation (issue 23:
"scans no network here has seen"). Runs synthesis on the T2 (and, with --flair, once more with
S_flair), then prints per run:

- Dice and recall of the lesion mask against the reference (whole tumour, any label > 0), and the
  recall of each reference label;
- the mask's connected parts (count, largest sizes): what a reader must look through;
- bright non-tumour tissue marked and changed (metrics.bright_tissue: on T2 the CSF, at least 5
  voxels from the reference), with the FLAIR, when given, of each marked part relative to the
  brain's FLAIR median: above 1 the part is FLAIR-bright (oedema or a lesion the reference left
  out), below 1 it is CSF;
- far brain changed (more than 4 voxels from the reference, by more than 1 % of V99.5).

With --figure PNG: for each run, the axial slice with the most lesion, the axial slice with the
most bright tissue marked, and the coronal slice with the most lesion: T2 | FLAIR (if given) |
reference (green) and lesion mask (red), bright tissue marked (yellow) | pseudo-normal.

    python scripts/external_case.py T2.nii.gz REFERENCE.nii.gz [--flair FLAIR.nii.gz] [--figure F.png]

The reference may be an expert's or another algorithm's segmentation; say which when quoting.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image
from scipy import ndimage

from smilecore.metrics import bright_tissue, dice, share_marked
from smilecore.modelfile import default_model_path, load_model
from smilecore.overview import grey, panel_row
from smilecore.synthesis import synthesize
from smilecore.volume import load_label, load_nifti


def run_figures(result, t2, reference, labels, flair) -> dict:
    """The printed figures of one synthesis (module docstring)."""
    mask = np.asarray(result.lesion_mask) > 0
    brain = t2 > 0
    bright = bright_tissue(t2, brain, reference)
    changed = np.abs(np.asarray(result.pseudo_normal) - t2) > 0.01 * np.percentile(t2[brain], 99.5)
    far = brain & (ndimage.distance_transform_edt(~reference) > 4)
    parts, n = ndimage.label(mask)
    sizes = np.sort(np.bincount(parts.ravel())[1:])[::-1]
    out = {"dice": dice(mask, reference), "recall": float((mask & reference).sum() / reference.sum()),
           "label_recall": {int(v): float((mask & (labels == v)).sum() / (labels == v).sum())
                            for v in np.unique(labels) if v > 0},
           "parts": int(n), "largest_parts": sizes[:5].tolist(),
           "bright_marked": share_marked(mask, bright), "bright_changed": share_marked(changed, bright),
           "far_changed": float((changed & far).sum() / far.sum())}
    if flair is not None:
        marked, k = ndimage.label(mask & bright)
        median = float(np.median(flair[flair > 0]))
        out["bright_marked_flair"] = [(int((marked == i).sum()), round(float(flair[marked == i].mean() / median), 2))
                                      for i in range(1, k + 1) if (marked == i).sum() >= 20]
    return out


def figure_rows(name, result, t2, flair, reference) -> list[Image.Image]:
    """Three rows of panels for one run (module docstring); canonical LPS input assumed (BraTS)."""
    mask = np.asarray(result.lesion_mask) > 0
    hit = mask & bright_tissue(t2, t2 > 0, reference)
    hi = float(np.percentile(t2[t2 > 0], 99.5))
    views = [("axial", 2, int(mask.sum((0, 1)).argmax())), ("axial", 2, int(hit.sum((0, 1)).argmax())),
             ("coronal", 1, int(mask.sum((0, 2)).argmax()))]
    rows = []
    for view, axis, index in views:
        cut = lambda a: np.rot90(np.take(a, index, axis=axis))  # noqa: E731
        rgb = lambda a: np.stack([a] * 3, -1)  # noqa: E731
        edge = lambda m: m & ~ndimage.binary_erosion(m)  # noqa: E731
        overlay = rgb(grey(cut(t2), hi))
        overlay[edge(cut(reference))] = (0, 255, 0)
        overlay[edge(cut(mask))] = (255, 0, 0)
        overlay[cut(hit)] = (255, 255, 0)
        panels = [(f"{name}: {view} {index}, T2", rgb(grey(cut(t2), hi)))]
        if flair is not None:
            panels.append(("FLAIR", rgb(grey(cut(flair), float(np.percentile(flair[flair > 0], 99.5))))))
        panels += [("reference, mask, CSF marked", overlay),
                   ("pseudo-normal", rgb(grey(cut(np.asarray(result.pseudo_normal)), hi)))]
        rows.append(panel_row(panels, zoom=1))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("t2")
    ap.add_argument("reference")
    ap.add_argument("--flair", default=None)
    ap.add_argument("--model", default=None, help="model file (default: the shipped default)")
    ap.add_argument("--figure", default=None)
    args = ap.parse_args(argv)
    model = load_model(args.model or default_model_path())
    t2, affine, _ = load_nifti(args.t2)
    reference = load_label(args.reference, t2.shape, affine)
    labels = np.asarray(load_nifti(args.reference, what="segmentation")[0]).astype(int)
    flair = load_nifti(args.flair, what="FLAIR")[0] if args.flair else None
    runs = [("T2", None)] + ([("T2+FLAIR", (flair, affine))] if flair is not None else [])
    rows = []
    for name, given in runs:
        t0 = time.time()
        result = synthesize(t2, affine, model, flair=given, notify=lambda m: None)
        figures = run_figures(result, t2, reference, labels, flair)
        print(f"{name} ({result.segmentor}, {time.time() - t0:.0f} s): " +
              ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
        rows += figure_rows(f"{name} ({result.segmentor})", result, t2, flair, reference) if args.figure else []
    if args.figure:
        canvas = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "black")
        for k, row in enumerate(rows):
            canvas.paste(row, (0, sum(r.height for r in rows[:k])))
        canvas.save(args.figure, optimize=True)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
