"""What the reach of G's change (synthesis_blend.kept_near_lesion) does to a case, as one PNG:
axial slices of the input | the pseudo-normal with no reach (G's change kept wherever its gate
opened) | the pseudo-normal as synthesis makes it now (the model's reach), radiological view, the
input's grey scale (0 to its V99.5).

    python scripts/reach_figure.py T2_FILE --slices 63,86 --out docs/images/change-reach.png [--model M]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from smilecore.modelfile import default_model_path, load_model
from smilecore.overview import grid_figure
from smilecore.synthesis import synthesize
from smilecore.synthesis_blend import change_reach
from smilecore.volume import reorient, to_canonical


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("t2")
    ap.add_argument("--slices", required=True, help="axial slice numbers (canonical LPS order), comma-separated")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="model file (default: the shipped default)")
    args = ap.parse_args(argv)
    model = load_model(args.model or default_model_path())
    image = nib.load(args.t2)
    data = np.asarray(image.dataobj, np.float32)
    t = to_canonical(image.affine)
    canonical = lambda a: reorient(np.asarray(a, np.float32), t)  # noqa: E731
    unlimited = dataclasses.replace(model, config={**model.config, "change_reach_mm": 0})
    runs = [canonical(synthesize(data, image.affine, m, notify=lambda _: None).pseudo_normal) for m in (unlimited, model)]
    volume = canonical(data)
    hi = float(np.percentile(volume[volume > 0], 99.5))
    zs = [int(z) for z in args.slices.split(",")]
    columns = [np.stack([np.clip(v[:, :, z] / hi, 0, 1) for z in zs]) for v in (volume, *runs)]
    name = Path(args.t2).name.split(".")[0]
    grid_figure(Path(args.out), columns, ["input", "no reach", f"reach {change_reach(model.config):g} mm (now)"],
                [f"{name}, axial slice {z}" for z in zs])
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
