"""The image modality check's measure (smilecore/modalitycheck.py) on real cases, as they are and
as users bring them: z-scored, noisy, 5 mm slices, 0.5 mm in-plane, a head with its brain mask, a
40-slice slab through the middle and one higher up. Prints each volume's values, then the range per
modality and version (docs/BAD_INPUTS.md quotes them).

    python scripts/modality_check_values.py ../shared/data/brats ../shared/data/brats2023_unlabeled

About 30 minutes for 13 cases on the 2-core CPU (one core busy with other work).
"""
import sys
from pathlib import Path

import numpy as np

from smilecore.cases import modality_from_name
from smilecore.modalitycheck import csf_brightness
from smilecore.synthetic import resample_case, with_noise, with_scalp
from smilecore.volume import CanonicalVolume, load_nifti


def versions(vol: CanonicalVolume, modality: str) -> dict:
    """(data, affine, brain mask or None) of each version of a canonical (LPS) volume."""
    raw, brain, none = vol.raw, vol.brain, np.zeros(vol.raw.shape, np.uint8)
    affine = np.diag([-vol.spacing[0], -vol.spacing[1], vol.spacing[2], 1.0])
    z = int(np.nonzero(brain.any(axis=(0, 1)))[0].mean())
    out = {"as is": (raw, affine, None),
           "z-scored": (np.where(brain, (raw - raw[brain].mean()) / raw[brain].std(), 0).astype(np.float32), affine, None),
           "noisy": (with_noise(raw, everywhere=True), affine, None),
           "5 mm slices": resample_case(raw, none, affine, 1.0, 5)[::2] + (None,),
           "slab 40": (raw[:, :, z - 20:z + 20], affine, None),
           "slab 40 higher": (raw[:, :, z + 10:z + 50], affine, None)}
    if modality == "t2":
        out["head, brain mask"] = (with_scalp(raw), affine, brain)
        out["0.5 mm in-plane"] = resample_case(raw, none, affine, 0.5, 1)[::2] + (None,)
    return out


def main(folders: list[str]) -> None:
    table = {}
    for path in sorted(p for folder in folders for p in Path(folder).glob("*/*.nii.gz")):
        modality = modality_from_name(path)
        if modality not in ("t1", "t1ce", "t2", "flair"):
            continue
        data, affine, _ = load_nifti(path)
        for name, (d, a, brain) in versions(CanonicalVolume.from_array(data, affine), modality).items():
            vol = CanonicalVolume.from_array(d, a, brain=brain)
            value = csf_brightness(vol.raw, vol.brain, vol.spacing)
            table.setdefault((modality, name), []).append(value)
            print(f"{path.name:40s} {name:18s} {value:.2f}", flush=True)
    for (modality, name), values in sorted(table.items()):
        print(f"{modality:6s} {name:18s} {min(values):.2f} - {max(values):.2f}  ({len(values)} volumes)")


if __name__ == "__main__":
    main(sys.argv[1:])
