"""Does R paint a lesion that looks like one? (issue 24, item 4)

On each of the 12 labelled cases (the host), the fill protocol's placed mask (another case's
whole tumour, put in the host's healthy brain: cv_fill.placed_case) is given two contents:

- **real**: the donor's own T2 tumour pasted into the mask (pasted_tumour_cases.pasted_host);
- **painted**: R's pseudo-abnormal, `synthesize(host T2, mask=placed mask)`: review mode on the
  healthy host, so R paints a lesion into that mask (the product's "paint a lesion anywhere").

Both are judged by a segmentor trained on real lesions that never saw the host: the T2 segmentor
of the cross-validation fold that held the host out (cv_segmentor.py's fold model, run as the
model's S_t2 through synthesis, as healthiness_cases.py --judges does). `found`: the share of the
mask it marks. And the local statistics inside the mask, in units of the host's brain median
(the recipe's scaling): mean, SD, mean in-plane gradient magnitude, and the mean at 0-2, 3-5 and
6+ voxels inside the mask's edge (rim against core). Painted over real is 1 where R's lesion
matches a real lesion of the same shape at the same place.

R was trained on 10 of the 12 cases (the default's split); the donor tumours it is compared with
are real ones of other cases. Mean +- SD over the 4 folds of cv_segmentor.py.

    python scripts/painted_lesion_check.py DATA_DIR --judges CV_DIR --recipe mirror --out RECORD.json
    python scripts/painted_lesion_check.py --summary RECORD.json
    python scripts/painted_lesion_check.py DATA_DIR --figure HOST,HOST --figure-out PNG   # a look
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
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import folds  # noqa: E402
from healthiness_cases import fold_judges  # noqa: E402
from pasted_tumour_cases import labelled_cases, pasted_host, run_hosts  # noqa: E402

from smilecore.modelfile import default_model_path, load_model  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402

STATS = ("found", "mean", "sd", "gradient", "rim", "middle", "core")


def inside_stats(volume: np.ndarray, mask: np.ndarray, median: float) -> dict:
    """Mean, SD, in-plane gradient magnitude and the rim/middle/core means inside `mask`, over `median`."""
    v = volume / median
    gx, gy = np.gradient(v, axis=(0, 1))
    depth = ndimage.distance_transform_edt(mask, sampling=(1, 1, 1))
    parts = {"rim": (depth > 0) & (depth <= 2), "middle": (depth > 2) & (depth <= 5), "core": depth > 5}
    return {"mean": float(v[mask].mean()), "sd": float(v[mask].std()), "gradient": float(np.hypot(gx, gy)[mask].mean()),
            **{k: float(v[w].mean()) if w.any() else float("nan") for k, w in parts.items()}}


def check_host(host_id: str, cases: dict, cached: dict, model, judge_model) -> dict:
    host = pasted_host(host_id, cases, cached)
    mask, truth, affine = host["mask"], host["truth"], host["affine"]
    t0 = time.time()
    painted = synthesize(truth, affine, model, mask=mask, notify=lambda m: None).pseudo_abnormal
    median = float(np.median(truth[truth > 0]))
    out = {"mask": host["placed"], "mask_ml": round(host["mask_ml"], 2)}
    for name, volume in (("real", host["pasted"]), ("painted", painted)):
        found = synthesize(volume, affine, judge_model, notify=lambda m: None).lesion_mask > 0
        out[name] = {"found": float((found & mask).sum() / mask.sum()), **inside_stats(volume, mask, median)}
    out["seconds"] = round(time.time() - t0)
    return out


def figure(host_ids: list[str], cases: dict, cached: dict, model, out: Path) -> None:
    """Axial and coronal views through each host's mask: the healthy host | the real tumour pasted |
    R's painted lesion, the mask outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fill_figure import MARGIN, views
    titles = ("healthy host (truth)", "real tumour pasted", "R's painted lesion")
    fig, axes = plt.subplots(2 * len(host_ids), 3, figsize=(7, 2.4 * 2 * len(host_ids)))
    for h, host_id in enumerate(host_ids):
        host = pasted_host(host_id, cases, cached)
        mask = host["mask"]
        painted = synthesize(host["truth"], host["affine"], model, mask=mask, notify=lambda m: None).pseudo_abnormal
        idx = np.nonzero(mask)
        centre = tuple(int(round(float(np.mean(i)))) for i in idx)
        box = tuple((max(int(i.min()) - MARGIN, 0), min(int(i.max()) + 1 + MARGIN, n)) for i, n in zip(idx, mask.shape))
        hi = float(np.percentile(host["pasted"][host["pasted"] > 0], 99.5))
        outline = views(mask.astype(np.float32), centre, box)
        for c, volume in enumerate((host["truth"], host["pasted"], painted)):
            for v, view in enumerate(views(volume, centre, box)):
                ax = axes[2 * h + v, c]
                ax.imshow(view, cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
                ax.contour(outline[v], levels=[0.5], colors="tab:orange", linewidths=0.5)
                ax.set_xticks([]), ax.set_yticks([])
        axes[2 * h, 0].set_ylabel(f"{host_id.replace('Brats18_', '')}\naxial", fontsize=7)
        axes[2 * h + 1, 0].set_ylabel("coronal", fontsize=7)
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=80)
    print(f"{out}: {out.stat().st_size // 1024} KB")


def summary(path: str) -> str:
    record = json.loads(Path(path).read_text())
    cases = record["cases"]
    fold_ids = folds(sorted(cases))
    lines = [f"{len(cases)} hosts, judges {record['judges']} ({record['recipe']}); mean +- SD over folds",
             "", "| inside the mask | real donor tumour | R's painted lesion | painted / real (per host, mean) |",
             "|---|---|---|---|"]
    for key in STATS:
        cells = []
        for name in ("real", "painted"):
            per_fold = [np.mean([cases[c][name][key] for c in f]) for f in fold_ids]
            cells.append(f"{np.mean(per_fold):.3f} +- {np.std(per_fold):.3f}")
        ratio = np.mean([cases[c]["painted"][key] / cases[c]["real"][key] for c in cases if cases[c]["real"][key]])
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    lines += ["", "per host: found by the fold judge, real / painted"]
    lines += [f"  {c}: {cases[c]['real']['found']:.2f} / {cases[c]['painted']['found']:.2f} "
              f"(donor {cases[c]['mask']['donor']}, {cases[c]['mask_ml']} mL)" for c in sorted(cases)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--judges", help="cv_segmentor.py's folder with RECIPE/fold<k>.pt")
    ap.add_argument("--recipe", default="mirror", help="the judges' recipe (a T2 recipe of cv_segmentor.py)")
    ap.add_argument("--model", default=None, help="the model whose R paints (default: the shipped default)")
    ap.add_argument("--out")
    ap.add_argument("--cases", default="", help="only these hosts (comma-separated)")
    ap.add_argument("--cache-dir", default=None, help="cv_fill.py's cache of normalised cases")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary")
    ap.add_argument("--figure", help="hosts (comma-separated): draw them to --figure-out instead of measuring")
    ap.add_argument("--figure-out", default="painted-lesion.png")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return 0
    torch.set_num_threads(args.threads)
    model_path = str(args.model or default_model_path())
    model = load_model(model_path)
    cases, cached = labelled_cases(args.data_dir, args.cache_dir)
    if args.figure:
        figure(args.figure.split(","), cases, cached, model, Path(args.figure_out))
        return 0
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {
        "model": model_path, "judges": str(args.judges), "recipe": args.recipe, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        judges = fold_judges(args.judges, model_path, Path(tmp), recipe=args.recipe)
        run_hosts(record, out, sorted(cases), args.cases, lambda cid: check_host(cid, cases, cached, model, judges[cid]),
                  lambda r: f"found real {r['real']['found']:.2f}, painted {r['painted']['found']:.2f}; mean "
                            f"{r['real']['mean']:.2f} / {r['painted']['mean']:.2f}, sd {r['real']['sd']:.2f} / "
                            f"{r['painted']['sd']:.2f}")
    print(summary(str(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
