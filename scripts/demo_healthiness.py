"""How much of the bundled sample's tumour a demo's pseudo-normal still shows, and how much brain
far from the tumour it changed (docs/cli.md, "The bundled default's S_flair").

    smile demo --out-dir D [--with-flair]
    smile synthesize D/Brats18_TCIA02_370_1_t2_pseudo_normal.nii.gz --out-dir D/again
    python scripts/demo_healthiness.py D [D2 ...]

h: 1 - (expert lesion voxels that the default's S marks again in the pseudo-normal) / (expert
lesion voxels). Far changed: brain voxels more than 4 voxels from the expert lesion whose value
changed by more than 1 % of the input's V99.5 (brain's 99.5th percentile), over all such voxels.
"""
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from smilecore.modelfile import resources_dir

STEM = "Brats18_TCIA02_370_1_t2"


def main(folders) -> None:
    sample = resources_dir() / "sample"
    t2 = nib.load(sample / f"{STEM}.nii.gz").get_fdata()
    lesion = nib.load(sample / "Brats18_TCIA02_370_1_seg.nii.gz").get_fdata() > 0
    brain = t2 > 0
    far = brain & (ndimage.distance_transform_edt(~lesion) > 4)
    v995 = np.percentile(t2[brain], 99.5)
    for folder in map(Path, folders):
        pseudo_normal = nib.load(folder / f"{STEM}_pseudo_normal.nii.gz").get_fdata()
        again = nib.load(folder / "again" / f"{STEM}_pseudo_normal_lesion_mask.nii.gz").get_fdata() > 0
        left = int((again & lesion).sum())
        changed = (np.abs(pseudo_normal - t2) > 0.01 * v995) & far
        print(f"{folder}: expert lesion {int(lesion.sum())} voxels, {left} found again (h {1 - left / lesion.sum():.3f}); "
              f"far brain changed {100 * changed.sum() / far.sum():.2f} %")


if __name__ == "__main__":
    main(sys.argv[1:])
