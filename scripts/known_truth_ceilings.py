"""How far can a fill get on the known-truth set? Ceilings that use the truth itself.

Usage: python scripts/known_truth_ceilings.py DATA_DIR CASE [CASE ...] [--cache-dir D]

For the transplanted lesions that `smile evaluate` uses (32, seed 0) in the named cases, the
PSNR/SSIM inside the lesion of: the untouched input, the mean-of-surroundings fill, the smooth
fill (lesionfill.py), the best constant per lesion (the truth's own mean), and the truth
blurred by a Gaussian of sigma 1, 2, 3 px (normalised over the brain, so the background does not
darken the rim). The blurred truth stands for a restoration that is right at that scale and
knows nothing finer: a target "mean fill + 3 dB" needs roughly the sigma at which the blurred
truth reaches it.
"""
import argparse
import json

import numpy as np
from scipy import ndimage

from smilecore import metrics
from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.evaluate import best_constant, mean_fill, transplant_set
from smilecore.lesionfill import fill_lesion_array


def blurred_truth(truth: np.ndarray, sigma: float) -> np.ndarray:
    brain = (truth > 0).astype(np.float32)
    num = ndimage.gaussian_filter(truth * brain, sigma)
    den = ndimage.gaussian_filter(brain, sigma)
    return np.where(brain > 0, num / np.maximum(den, 1e-3), 0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("cases", nargs="+")
    p.add_argument("--cache-dir", default="smile-cache")
    args = p.parse_args()
    found = {c.case_id: c for c in find_cases(args.data_dir)}
    t = transplant_set([cache_case(found[c], args.cache_dir) for c in args.cases], 32, 0)
    fills = {"untouched": t.image, "mean_fill": mean_fill(t.image, t.lesion),
             "smooth_fill": fill_lesion_array(t.image, t.lesion, 0),
             "best_constant": best_constant(t.image, t.truth, t.lesion)}
    for sigma in (1, 2, 3):
        fills[f"truth_blurred_{sigma}px"] = np.where(
            t.lesion, np.stack([blurred_truth(x, sigma) for x in t.truth]), t.image)
    out = {k: {m: round(v, 3) for m, v in metrics.known_truth_errors(img, t.truth, t.lesion).items()}
           for k, img in fills.items()}
    print(json.dumps({"cases": args.cases, "lesions": len(t.image), **out}, indent=1))


if __name__ == "__main__":
    main()
