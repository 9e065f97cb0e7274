"""How far synthesis on cropped slices is from synthesis on whole slices, on the bundled case
(synthesis_grid.brain_box's docstring quotes it): the shipped default, fp32, inside the brain,
in units of V99.5 (speed.compare_results), for the crop synthesis uses and the alternatives.

    OMP_NUM_THREADS=1 python scripts/crop_fidelity.py
"""
from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import torch

from smilecore import fillnet, synthesis, synthesis_grid
from smilecore.cli import demo_inputs
from smilecore.modelfile import default_model_path, load_model
from smilecore.speed import compare_results
from smilecore.volume import CanonicalVolume

WHOLE = 10_000   # a margin wider than any slice: every slice whole


def main() -> int:
    torch.set_num_threads(1)
    image = nib.load(str(demo_inputs()[0]))
    data = np.asanyarray(image.dataobj)
    model = load_model(default_model_path())
    vol = CanonicalVolume.from_array(data, image.affine)
    box, blocks, r_margin, f_margin = (synthesis_grid.brain_box, synthesis_grid.block_boxes, synthesis.R_MARGIN,
                                       fillnet.CROP_MARGIN)
    one_box = lambda brain, zs, multiple, block: [(zs, *box(brain, multiple)[:2])]  # noqa: E731
    variants = {"whole slices": (WHOLE, blocks, WHOLE), "one box for all slices, 16 px": (16, one_box, r_margin),
                "a box per block, 16 px (shipped)": (16, blocks, r_margin), "a box per block, 32 px": (32, blocks, r_margin)}
    results = {}
    try:
        for name, (margin, blocking, r) in variants.items():
            synthesis_grid.brain_box = lambda brain, multiple, margin=margin: box(brain, multiple, margin)
            synthesis_grid.block_boxes, synthesis.R_MARGIN = blocking, r
            fillnet.CROP_MARGIN = WHOLE if r == WHOLE else f_margin   # R and the fill network near the lesion
            t0 = time.process_time()
            results[name] = synthesis.synthesize(data, image.affine, model, notify=lambda m: None)
            print(f"{name}: {time.process_time() - t0:.1f} s of CPU (one thread)", flush=True)
    finally:
        synthesis_grid.brain_box, synthesis_grid.block_boxes, synthesis.R_MARGIN = box, blocks, r_margin
        fillnet.CROP_MARGIN = f_margin
    reference = results.pop("whole slices")
    for name, result in results.items():
        d = compare_results(reference, result, vol)
        print(f"{name} against whole slices: pseudo-normal max {d['pseudo_normal_max_abs']:.3f} "
              f"(mean {d['pseudo_normal_mean_abs']:.1e}), pseudo-abnormal max {d['pseudo_abnormal_max_abs']:.3f}, "
              f"lesion mask Dice {d['mask_dice']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
