"""Writing a synthesis' outputs: each to a temporary name beside its final one (synthesis.py
renames them all into place once every one was written; see its docstring)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import temp_name, write_failed, write_temp_like


def write_temporaries(result, data, affine, img, out_dir: Path, stem: str, overview: bool,
                       pending: dict) -> None:
    """Each output to its temporary name, recorded in `pending` (name: (temporary, final)) as soon
    as it exists. Memory: each array is let go once written, and the overview (which needs the
    input, the pseudo-normal, the pseudo-abnormal and the mask) comes when the other two are gone."""
    from .overview import overview_image

    def write(name):
        final = out_dir / f"{stem}_{name}.nii.gz"
        dtype = np.uint8 if name == "lesion_mask" else np.float32
        pending[name] = (write_temp_like(getattr(result, name), img, final, dtype=dtype), final)
        setattr(result, name, None)
    for name in ("lesion_probability", "difference"):
        write(name)
    if overview:
        final = out_dir / f"{stem}_overview.png"
        tmp = temp_name(final)
        pending["overview"] = (tmp, final)
        try:
            overview_image(data, affine, result).save(tmp, format="PNG")
        except OSError as exc:
            raise write_failed(final, exc, "PNG overview") from exc
    for name in ("pseudo_normal", "pseudo_abnormal", "lesion_mask"):
        write(name)
