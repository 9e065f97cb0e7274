"""The default model on a real case made to look like what users bring: noisy backgrounds, an
intensity intercept, a head that was not skull-stripped, clinical voxel sizes. Prints, per
variant, the Dice of S against the expert label at that resolution, or the refusal, and the notes.

    python scripts/real_world_inputs.py [IMAGE_t2.nii.gz SEG.nii.gz] [--slab N] [--model M]

Default: the bundled sample case (held out from the default model's training). `--slab N` uses
the N axial slices around the tumour's centre only (what the tests do, to be quick).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

from smilecore.metrics import dice
from smilecore.modelfile import default_model_path, load_model, resources_dir
from smilecore.synthesis import synthesize
from smilecore.synthetic import resample_case, with_noise, with_scalp
from smilecore.volume import VolumeError, load_label, load_nifti


def slab(data, label, n):
    z = np.nonzero(label.any(axis=(0, 1)))[0]
    centre = int(z.mean()) if len(z) else data.shape[2] // 2
    lo = max(0, min(centre - n // 2, data.shape[2] - n))
    return data[:, :, lo:lo + n], label[:, :, lo:lo + n]


def variants(data, label, affine):
    """(name, image, label, affine, brain mask or None) for each kind of input."""
    yield "as distributed (1 mm, skull-stripped, background 0)", data, label, affine, None
    yield "background noise, SD 2 % of V99.5", with_noise(data), label, affine, None
    yield "noise everywhere, SD 2 % of V99.5", with_noise(data, everywhere=True), label, affine, None
    yield "intercept +1 (background at 1)", data + 1, label, affine, None
    yield "not skull-stripped: scalp beyond a 4 mm skull", with_scalp(data), label, affine, None
    yield "not skull-stripped: the same, joined at the neck", with_scalp(data, joined_slices=25), label, affine, None
    yield "not skull-stripped: scalp on the brain, no skull", with_scalp(data, gap_mm=0), label, affine, None
    yield "not skull-stripped, with --brain-mask", with_scalp(data), label, affine, data > 0
    for in_plane, thick in ((0.5, 1), (240 / 512, 1), (1.0, 5), (0.5, 5)):
        image, lab, aff = resample_case(data, label, affine, in_plane, thick)
        yield f"{in_plane:.2f} x {in_plane:.2f} x {thick} mm ({' x '.join(map(str, image.shape))})", image, lab, aff, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?")
    ap.add_argument("seg", nargs="?")
    ap.add_argument("--slab", type=int, default=0, help="use this many slices around the tumour (0: all)")
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    args = ap.parse_args(argv)
    sample = resources_dir() / "sample"
    image_path = Path(args.image) if args.image else next(sample.glob("*_t2.nii.gz"))
    seg_path = Path(args.seg) if args.seg else next(sample.glob("*_seg.nii.gz"))
    data, affine, _ = load_nifti(image_path)
    label = load_label(seg_path, data.shape, affine)
    if args.slab:
        data, label = slab(data, label, args.slab)
    model = load_model(args.model or default_model_path())
    print(f"{image_path.name}{f', {args.slab} slices' if args.slab else ''}; model {model.path}")
    for name, image, lab, aff, brain in variants(data, label, affine):
        notes = []
        t = time.time()
        try:
            r = synthesize(image, aff, model, notify=notes.append, brain=brain)
            outcome = f"Dice {dice(r.lesion_mask > 0, lab > 0):.3f}"
        except VolumeError as exc:
            outcome = f"refused: {str(exc).split(': ', 1)[1][:110]}..."
        print(f"- {name}: {outcome} ({time.time() - t:.0f} s)")
        for note in notes:
            print(f"    note: {note.split(': ', 1)[1][:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
