"""The fill, axial and coronal (issue 24, item 5): docs/images/fill-axial-coronal.png.

For a few test cases of the fill cross-validation (scripts/cv_fill.py: the same placed masks),
two rows each, axial and coronal through the mask's centre:

    voided input | review fill, no pass | review fill, through-plane pass | ring mean | truth

The review fills are those `cv_fill.py --methods ring_mean,review_nopass --save-fills` saved
(review mode without the engine's through-plane pass); the pass is applied here as cv_fill
applies it (synthesis_blend.through_plane_pass, the function compose_outputs runs).

    python scripts/fill_figure.py DATA_DIR --fills /tmp/fillcache/fills --cache-dir /tmp/fillcache \
        [--cases A,B,C] [--sigma 1.5] [--out docs/images/fill-axial-coronal.png]

`--demo A,B` instead compares two `smile demo --out-dir` folders (without and with the pass):
input | pseudo-normal A | pseudo-normal B, coronal and sagittal through the lesion's centre.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_fill import placed_case, with_pass  # noqa: E402

from smilecore import inpainting_protocol as protocol  # noqa: E402
from smilecore.cases import find_cases  # noqa: E402
from smilecore.dataset import cache_case  # noqa: E402

CASES = ("Brats18_TCIA01_378_1", "Brats18_2013_11_1", "Brats18_CBICA_ALU_1")  # one from each of three folds
COLUMNS = ("voided input", "review, no pass", "review, z pass", "ring mean", "truth")
MARGIN = 24   # voxels of context shown around the mask


def views(volume: np.ndarray, centre: tuple, box: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(axial slice at the centre's z, coronal slice at its y with superior up), cropped to box."""
    (x0, x1), (y0, y1), (z0, z1) = box
    axial = volume[x0:x1, y0:y1, centre[2]].T                 # rows: posterior y, columns: x
    coronal = volume[x0:x1, centre[1], z0:z1].T[::-1]         # rows: superior first
    return axial, coronal


def case_panels(case, donors: list, seed: int, fill: np.ndarray, sigma: float) -> tuple[list, float, tuple]:
    """The five volumes of one case, its display range and the mask's centre and box."""
    truth, _, mask, _ = placed_case(case, donors, seed)
    given = protocol.voided(truth, mask)
    volumes = [given, fill, with_pass(fill, mask, sigma), protocol.ring_mean_fill(given, mask), truth]
    idx = np.nonzero(mask)
    centre = tuple(int(round(float(np.mean(i)))) for i in idx)
    box = tuple((max(int(i.min()) - MARGIN, 0), min(int(i.max()) + 1 + MARGIN, n)) for i, n in zip(idx, mask.shape))
    hi = float(np.percentile(truth[truth > 0], 99.5))
    return [views(v, centre, box) for v in volumes] + [views(mask.astype(np.float32), centre, box)], hi, centre


def draw(rows: list, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2 * len(rows), len(COLUMNS), figsize=(2.1 * len(COLUMNS), 2.1 * 2 * len(rows)))
    for r, (name, panels, hi, centre) in enumerate(rows):
        outline = panels[-1]
        for v, view in enumerate(("axial", "coronal")):
            for c, title in enumerate(COLUMNS):
                ax = axes[2 * r + v, c]
                ax.imshow(panels[c][v], cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
                if c == 0:
                    ax.contour(outline[v], levels=[0.5], colors="tab:orange", linewidths=0.6)
                    ax.set_ylabel(f"{name.replace('Brats18_', '')}\n{view} "
                                  f"{'z' if view == 'axial' else 'y'}={centre[2 if view == 'axial' else 1]}",
                                  fontsize=7)
                if r == 0 and v == 0:
                    ax.set_title(title, fontsize=8)
                ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    print(f"{out}: {out.stat().st_size // 1024} KB")


def demo_views(dirs: list[str], out: Path):
    """The demo's pseudo-normals from `dirs` beside its input, coronal and sagittal (RAS, superior
    up) through the centre of the first folder's lesion mask, cropped around it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    load = lambda p: np.asarray(nib.as_closest_canonical(nib.load(p)).dataobj, np.float32)  # noqa: E731
    first = Path(dirs[0])
    stem = next(first.glob("*_pseudo_normal.nii.gz")).name.replace("_pseudo_normal.nii.gz", "")
    lesion = load(first / f"{stem}_lesion_mask.nii.gz") > 0
    # the input: pseudo-normal + difference (difference = input - pseudo-normal)
    images = [load(first / f"{stem}_pseudo_normal.nii.gz") + load(first / f"{stem}_difference.nii.gz")]
    images += [load(Path(d) / f"{stem}_pseudo_normal.nii.gz") for d in dirs]
    idx = np.nonzero(lesion)
    c = [int(round(float(np.mean(i)))) for i in idx]
    lo = [max(int(i.min()) - MARGIN, 0) for i in idx]
    hi = [min(int(i.max()) + 1 + MARGIN, n) for i, n in zip(idx, lesion.shape)]
    top = float(np.percentile(images[0][images[0] > 0], 99.5))
    titles = ["input"] + [Path(d).name for d in dirs]
    fig, axes = plt.subplots(2, len(images), figsize=(2.6 * len(images), 5.2))
    for col, (img, title) in enumerate(zip(images, titles)):
        cor = img[lo[0]:hi[0], c[1], lo[2]:hi[2]].T[::-1]
        sag = img[c[0], lo[1]:hi[1], lo[2]:hi[2]].T[::-1]
        for row, view in enumerate((cor, sag)):
            axes[row, col].imshow(view, cmap="gray", vmin=0, vmax=top, interpolation="nearest")
            axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
        axes[0, col].set_title(title, fontsize=8)
    axes[0, 0].set_ylabel(f"coronal y={c[1]}", fontsize=7)
    axes[1, 0].set_ylabel(f"sagittal x={c[0]}", fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(out, dpi=72)
    print(f"{out}: {out.stat().st_size // 1024} KB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--fills", help="where cv_fill.py --save-fills put the review fills")
    ap.add_argument("--cache-dir")
    ap.add_argument("--demo", help="two smile demo --out-dir folders to compare instead (A,B)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--sigma", type=float, default=1.5, help="the pass's sigma (slices)")
    ap.add_argument("--out", default="docs/images/fill-axial-coronal.png")
    args = ap.parse_args(argv)
    if args.demo:
        demo_views(args.demo.split(","), Path(args.out))
        return 0
    if not (args.data_dir and args.fills and args.cache_dir):
        ap.error("DATA_DIR, --fills and --cache-dir are needed (or --demo)")
    cases = {c.case_id: c for c in find_cases(args.data_dir, require=True) if c.labeled}
    cached = {i: cache_case(c, args.cache_dir) for i, c in cases.items()}
    order = sorted(cached)
    rows = []
    for name in args.cases.split(","):
        path = Path(args.fills) / f"{name}_review_nopass.npy"
        if not path.is_file():
            raise SystemExit(f"{path}: no saved review fill (run cv_fill.py --save-fills first)")
        donors = [cached[d] for d in order if d != name]
        panels, hi, centre = case_panels(cached[name], donors, order.index(name), np.load(path), args.sigma)
        rows.append((name, panels, hi, centre))
    draw(rows, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
