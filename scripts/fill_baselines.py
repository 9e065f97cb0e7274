"""Analytic fills on the inpainting challenge's protocol (issue 24), no training: which start
should FillNet add its change to? Over the 12 labelled cases in the 4 folds of cv_fill /
cv_segmentor, each test case voided inside the same placed mask as scripts/cv_fill.py
(cv_fill.placed_case) and scored by the same code (inpainting_protocol.score). Fills, each
axial slice on its own unless named 3D:

  ring_mean        the mask filled with the mean of a 5-pixel ring around it (cv_fill's baseline)
  smooth           lesionfill.smooth_fill (FillNet's start before this script)
  mirror_matched   the mirrored hemisphere's tissue at the same place, mapped to the hole's ring
                   by mean and SD (the mirror's ring -> this side's ring); smooth where unusable
  blend_A          lesionfill.mirror_fill with alpha A: smooth + A x (mirror - the mirror's own
                   smooth fill of the same mask)
  blend_ring       the same with alpha per slice from the ring: the least-squares slope of this
                   side's ring tissue on the mirror's, both less their smooth fill of the grown mask
  blend3d_1.0      mirror_fill with the smooth fills in 3D (Gaussian normalised convolution over
                   neighbouring slices too), alpha 1
  blend_1.0_blind  blend_1.0 without zeroing the case's own tumour in the mirror

The mirror is about the centre of the brain's left-right extent (flair.mirror_sum). The case's
own tumour (its label, standing in for S's mask) is zeroed in the mirror, so the fill falls
back to the smooth fill where the mirrored place holds tumour (all but *_blind).

    python scripts/fill_baselines.py DATA_DIR --out docs/fill-cv/analytic [--cache-dir DIR]
    python scripts/fill_baselines.py DATA_DIR --out docs/fill-cv/analytic --summary
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
from cv_fill import MEASURES, placed_case  # noqa: E402
from cv_segmentor import folds  # noqa: E402

from smilecore import inpainting_protocol as protocol  # noqa: E402
from smilecore.cases import find_cases  # noqa: E402
from smilecore.dataset import cache_case  # noqa: E402
from smilecore.flair import mirror_sum, mirrored  # noqa: E402
from smilecore.lesionfill import FILL_SIGMA, grow, mirror_fill, smooth_fill  # noqa: E402

ALPHAS = (0.25, 0.5, 0.75, 1.0)
RING = 5


def axial(v: np.ndarray) -> torch.Tensor:
    """X x Y x Z volume -> Z x 1 x X x Y tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(v, 2, 0), np.float32))[:, None]


def volume_of(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t[:, 0].numpy(), 0, 2)


def matched(given: torch.Tensor, hole: torch.Tensor, mirror: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """Each slice's mirror mapped linearly so that its ring's mean and SD are this side's ring's."""
    out = smooth.clone()
    ring = (grow(hole, RING) > 0) & (hole == 0) & (given > 0) & (mirror > 0)
    for k in range(len(given)):
        r = ring[k]
        if r.sum() < 10:
            continue
        own, their = given[k][r], mirror[k][r]
        gain = float(own.std() / their.std().clamp(min=1e-6))
        usable = (hole[k] > 0) & (mirror[k] > 0)
        out[k][usable] = own.mean() + min(gain, 3.0) * (mirror[k][usable] - their.mean())
    return out


def ring_alpha(given: torch.Tensor, hole: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """Per slice: the least-squares slope of this side's ring texture on the mirror's (clipped to
    [0, 1]); the texture is each side less its smooth fill of the mask grown by the ring."""
    big = grow(hole, RING) > 0
    ring = big & (hole == 0) & (given > 0) & (mirror > 0)
    a = given - smooth_fill(given, big)
    b = mirror - smooth_fill(mirror, big)
    num = (a * b * ring).sum((1, 2, 3))
    den = (b * b * ring).sum((1, 2, 3)).clamp(min=1e-9)
    return (num / den).clamp(0, 1).view(-1, 1, 1, 1)


def smooth3d(image: np.ndarray, hole: np.ndarray, sigma: float = FILL_SIGMA) -> np.ndarray:
    known = ((image > 0) & ~hole).astype(np.float32)
    num = ndimage.gaussian_filter(image * known, sigma, mode="constant", truncate=3)
    den = ndimage.gaussian_filter(known, sigma, mode="constant", truncate=3)
    fill = np.where(den > 1e-3, num / np.maximum(den, 1e-3), float(image[known > 0].mean()))
    return np.where(hole, fill, image).astype(np.float32)


def fills(given: np.ndarray, mask: np.ndarray, tumour: np.ndarray) -> dict:
    """Every fill of the module docstring for one voided volume (X x Y x Z)."""
    total = mirror_sum((given > 0) | mask)
    out = {"ring_mean": protocol.ring_mean_fill(given, mask)}
    zs = np.nonzero(mask.any(axis=(0, 1)))[0]
    z = slice(int(zs[0]), int(zs[-1]) + 1)
    g, h = axial(given[:, :, z]), axial(mask[:, :, z].astype(np.float32))
    clean = np.where(tumour, 0, given)                       # the own tumour is no donor
    mir = axial(mirrored(np.moveaxis(clean, 2, 0), total)[z].transpose(1, 2, 0))
    blind = axial(mirrored(np.moveaxis(given, 2, 0), total)[z].transpose(1, 2, 0))
    slab = {}
    with torch.no_grad():
        slab["smooth"] = smooth_fill(g, h)
        slab["mirror_matched"] = matched(g, h, mir, slab["smooth"])
        for a in ALPHAS:
            slab[f"blend_{a}"] = mirror_fill(g, h, mir, a)
        slab["blend_ring"] = mirror_fill(g, h, mir, ring_alpha(g, h, mir))
        slab["blend_1.0_blind"] = mirror_fill(g, h, blind, 1.0)
    for name, t in slab.items():
        v = given.copy()
        v[:, :, z] = volume_of(t)
        out[name] = v
    m3 = np.moveaxis(mirrored(np.moveaxis(clean, 2, 0), total), 0, 2)
    texture = np.where(mask & (m3 > 0), m3 - smooth3d(m3, mask), 0)
    out["blend3d_1.0"] = smooth3d(given, mask) + texture
    return out


def mirror_census(given: np.ndarray, mask: np.ndarray, tumour: np.ndarray) -> dict:
    """Shares of the mask's voxels whose mirrored voxel is the case's tumour, voided or no brain."""
    total = mirror_sum((given > 0) | mask)
    flip = lambda v: np.moveaxis(mirrored(np.moveaxis(v, 2, 0), total), 0, 2)  # noqa: E731
    n = float(mask.sum())
    return {"tumour": float((flip(tumour.astype(np.float32)) > 0)[mask].sum() / n),
            "voided": float((flip(mask.astype(np.float32)) > 0)[mask].sum() / n),
            "no_brain": float((flip(((given > 0) | mask).astype(np.float32)) == 0)[mask].sum() / n)}


def run_case(case, donors, seed: int) -> dict:
    truth, tumour, mask, placed = placed_case(case, donors, seed)
    given = protocol.voided(truth, mask)
    t0 = time.time()
    filled = fills(given, mask, tumour)
    seconds = time.time() - t0
    scores = {n: protocol.score(f, truth, given, mask) for n, f in filled.items()}
    return {"case": case.case_id, "mask": placed, "mirror": mirror_census(given, mask, tumour),
            "fill_seconds": round(seconds, 1), "scores": scores}


def summary(records: dict, fold_ids: list) -> str:
    names = list(next(iter(records.values()))["scores"])
    rows = ["| fill | " + " | ".join(MEASURES) + " |", "|---" * (len(MEASURES) + 1) + "|"]
    per_fold = lambda n, m: [np.mean([records[c]["scores"][n][m] for c in f]) for f in fold_ids]  # noqa: E731
    for n in names:
        rows.append(f"| {n} | " + " | ".join(f"{np.mean(per_fold(n, m)):.3f} +- {np.std(per_fold(n, m)):.3f}"
                                             for m in MEASURES) + " |")
    # alpha picked by CV: for each fold the blend_A with the best mean SSIM on the other folds' cases
    picked, cells = [], {m: [] for m in MEASURES}
    for f in fold_ids:
        rest = [c for c in records if c not in f]
        best = max(ALPHAS, key=lambda a: np.mean([records[c]["scores"][f"blend_{a}"]["ssim"] for c in rest]))
        picked.append(best)
        for m in MEASURES:
            cells[m].append(np.mean([records[c]["scores"][f"blend_{best}"][m] for c in f]))
    rows.append("| blend_cv (alpha " + "/".join(str(a) for a in picked) + ") | "
                + " | ".join(f"{np.mean(cells[m]):.3f} +- {np.std(cells[m]):.3f}" for m in MEASURES) + " |")
    census = {k: np.mean([r["mirror"][k] for r in records.values()]) for k in ("tumour", "voided", "no_brain")}
    worst = max(records.values(), key=lambda r: r["mirror"]["tumour"])
    rows.append("\nmask voxels whose mirror is (mean over cases): " + ", ".join(f"{k} {v:.3f}" for k, v in census.items())
                + f"; most tumour: {worst['case']} {worst['mirror']['tumour']:.3f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    cases = {c.case_id: c for c in find_cases(args.data_dir, require=True) if c.labeled}
    fold_ids = folds(list(cases))
    path = out / "cases.json"
    records = json.loads(path.read_text()) if path.is_file() else {}
    if not args.summary:
        cache_dir = Path(args.cache_dir or Path(tempfile.gettempdir()) / "smile-fill-cv-cache")
        cached = {i: cache_case(c, cache_dir) for i, c in cases.items()}
        order = sorted(cached)
        for i in order:
            if i in records:
                continue
            records[i] = run_case(cached[i], [cached[d] for d in order if d != i], order.index(i))
            print(i, {n: round(s["ssim"], 3) for n, s in records[i]["scores"].items()}, flush=True)
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(records, indent=1))
    print(summary(records, fold_ids))
    return 0


if __name__ == "__main__":
    sys.exit(main())
