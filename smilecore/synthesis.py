"""Volume synthesis: run a trained model over every axial slice of a 3D volume.

Outputs, all in the input's voxel order and geometry, intensities in the input's scale:

- ``pseudo_normal``: G(I). It is written as ``input + V99.5 * (G(I) - I)``, i.e. G's change
  added to the untouched input, so that voxels G leaves alone keep their exact value (also
  those above the clipping percentile). Background (voxels <= 0) is left as it is.
  When the caller gives a lesion mask M (an edited or painted segmentation), the pseudo-normal
  is the blend the reviewer asked for: the input outside M and G's output inside M.
- ``lesion_probability`` and ``lesion_mask`` (p > model threshold) from S; when the caller
  gives M, ``lesion_mask`` is that M.
- ``pseudo_abnormal``: R(G(I), M), the same way in the input's scale.
- ``difference``: input - pseudo_normal (positive where a bright lesion was removed).

Slices are axial in the canonical LPS orientation whatever the input's voxel order (see
volume.py), limited to the slices and the in-plane bounding box that hold brain, and run in
batches under ``torch.inference_mode``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .modelfile import SmileModel, default_model_path, load_model
from .train import resolve_device
from .volume import CanonicalVolume, VolumeError, load_nifti, save_like

OUTPUT_NAMES = ("pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal", "difference")


class SynthesisCancelled(Exception):
    pass


@dataclass
class SynthesisResult:
    pseudo_normal: np.ndarray
    lesion_probability: np.ndarray
    lesion_mask: np.ndarray
    pseudo_abnormal: np.ndarray
    difference: np.ndarray
    mask_source: str  # "segmentor" or "user"

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in OUTPUT_NAMES}


def _brain_box(brain: np.ndarray, multiple: int) -> tuple[slice, slice, np.ndarray]:
    """In-plane bounding box of the brain over all slices, grown to a multiple of the network's
    down-sampling factor where the volume allows, and the axial indices that hold brain."""
    xs = np.nonzero(brain.any(axis=(1, 2)))[0]
    ys = np.nonzero(brain.any(axis=(0, 2)))[0]
    zs = np.nonzero(brain.any(axis=(0, 1)))[0]
    boxes = []
    for idx, size in ((xs, brain.shape[0]), (ys, brain.shape[1])):
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        want = -(-(hi - lo) // multiple) * multiple
        lo = max(0, min(lo - (want - (hi - lo)) // 2, size - want))
        boxes.append(slice(lo, min(size, lo + want)))
    return boxes[0], boxes[1], zs


def synthesize(data: np.ndarray, affine: np.ndarray, model: SmileModel, mask: np.ndarray | None = None,
               batch_size: int = 16, progress=None, cancel=None, where: str = "volume") -> SynthesisResult:
    """Run G, S and R over `data` (3D array with its voxel-to-world `affine`).

    `mask`: optional lesion mask in the same voxel order as `data`; it replaces S's mask for
    R and for the blend. `progress(done, total)` is called after each batch; `cancel()`
    returning True stops the run with SynthesisCancelled before any output exists.
    """
    vol = CanonicalVolume.from_array(data, affine, where=where,
                                     clip_percentile=model.config["normalisation"]["clip_percentile"])
    user_mask = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != np.shape(data):
            raise VolumeError(f"{where}: lesion mask shape {mask.shape} differs from the image's {np.shape(data)}")
        user_mask = vol.to_canonical_order(mask > 0)
    G, S, R = (model.nets[n] for n in "GSR")
    device = next(G.parameters()).device
    multiple = max(net.unet.multiple for net in (G, S, R))
    bx, by, zs = _brain_box(vol.brain, multiple)
    threshold = float(model.config.get("lesion_threshold", 0.5))

    shape = vol.image.shape
    G_out = np.zeros(shape, np.float32)
    R_out = np.zeros(shape, np.float32)
    prob = np.zeros(shape, np.float32)
    lesion = np.zeros(shape, bool)
    amp = device.type == "cuda"
    total = len(zs)
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            if cancel is not None and cancel():
                raise SynthesisCancelled("synthesis cancelled")
            z = zs[start:start + batch_size]
            I = torch.from_numpy(np.moveaxis(vol.image[bx, by][:, :, z], 2, 0)[:, None].copy()).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                G_I = G(I).float()
                p = torch.softmax(S(I).float(), dim=1)[:, 1]
                if user_mask is not None:
                    M = torch.from_numpy(np.moveaxis(user_mask[bx, by][:, :, z], 2, 0).copy()).to(device)
                else:
                    M = p > threshold
                Pab = R(G_I, M[:, None].float()).float()
            G_out[bx, by, z] = np.moveaxis(G_I[:, 0].cpu().numpy(), 0, 2)
            R_out[bx, by, z] = np.moveaxis(Pab[:, 0].cpu().numpy(), 0, 2)
            prob[bx, by, z] = np.moveaxis(p.cpu().numpy(), 0, 2)
            lesion[bx, by, z] = np.moveaxis(M.cpu().numpy(), 0, 2)
            if progress is not None:
                progress(min(start + batch_size, total), total)

    brain = vol.brain
    prob *= brain
    if user_mask is None:
        lesion &= brain
    else:
        lesion = user_mask.astype(bool)
    scale = vol.norm.scale
    change = np.where(brain, scale * (G_out - vol.image), 0.0)
    if user_mask is not None:
        change = np.where(lesion, change, 0.0)
    pseudo_normal = vol.raw + change
    pseudo_abnormal = vol.raw + np.where(brain | lesion, scale * (R_out - vol.image), 0.0)
    back = vol.to_input_order
    return SynthesisResult(
        pseudo_normal=back(pseudo_normal.astype(np.float32)),
        lesion_probability=back(prob),
        lesion_mask=back(lesion.astype(np.uint8)),
        pseudo_abnormal=back(pseudo_abnormal.astype(np.float32)),
        difference=back((vol.raw - pseudo_normal).astype(np.float32)),
        mask_source="user" if user_mask is not None else "segmentor")


def synthesize_file(input_path: str | Path, out_dir: str | Path, model: SmileModel | None = None,
                    mask_path: str | Path | None = None, batch_size: int = 16, progress=None,
                    overview: bool = True) -> dict[str, Path]:
    """Synthesise from a NIfTI file; write each output as NIfTI with the input's header, and a
    PNG overview. Returns the written paths by output name."""
    from .overview import save_overview

    input_path = Path(input_path)
    model = model or load_model(default_model_path())
    data, affine, img = load_nifti(input_path)
    mask = None
    if mask_path is not None:
        mask_data, mask_affine, _ = load_nifti(mask_path, what="mask")
        if mask_data.shape != data.shape or not np.allclose(mask_affine, affine, atol=1e-3):
            raise VolumeError(f"mask {mask_path}: not on the grid of {input_path} (shape or affine differ)")
        mask = mask_data > 0
    result = synthesize(data, affine, model, mask, batch_size, progress, where=f"image {input_path}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = input_path.name.replace(".nii.gz", "").replace(".nii", "")
    written = {}
    for name, arr in result.arrays().items():
        dtype = np.uint8 if name == "lesion_mask" else np.float32
        written[name] = save_like(arr, img, out_dir / f"{stem}_{name}.nii.gz", dtype=dtype)
    if overview:
        written["overview"] = save_overview(data, affine, result, out_dir / f"{stem}_overview.png")
    return written
