"""The networks' grid in synthesis: the axial slices of the canonical volume at the model's
training spacing, cropped to the slices and the in-plane box that hold brain.

Voxel size: the networks see slices at the model's training spacing (``spacing_mm`` in the model
file; 1 mm for files that predate it). Where the input's in-plane voxel size differs by more than
`SPACING_TOLERANCE`, each axial slice is resampled to it (`resample_slices`) before the networks,
and the networks' *change* is resampled back (synthesis_blend.py). Through-plane nothing is
resampled; slices thicker than `THICK_SLICE_FACTOR` x the training spacing get a note.

Crop: `brain_box`, aligned to the U-Net's down-sampling grid (see its docstring for why), over
the whole brain (`bx`, `by`: what the outputs are kept on) and, for the networks, over each block
of `BOX_BLOCK` consecutive brain slices (`blocks`): the top and bottom slices hold a small part of
the brain, and a box of their own takes 20-32 % of the pixels off S's and G's work (the 12 BraTS
cases of ../shared/data). Boxes belong to blocks, not to batches, so that the result does not
depend on the batch size or on an out-of-memory retry.

FLAIR and recipe segmentors (flair.py): S_flair's input volumes (T2 and FLAIR in its recipe's
scaling; S_t2's: the T2 in its recipe's) are resampled and cropped with the image, and mirrored
left-right per batch (`NetGrid.segmentor_slices`) about the centre of the brain's extent on the
networks' grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .flair import mirror_sum, mirrored
from .gated import context_of
from .modelfile import SmileModel
from .unet import aligned_span
from .volume import CanonicalVolume

CROP_MARGIN = 16  # pixels of background kept around the brain box (see brain_box)
BOX_BLOCK = 16    # consecutive brain slices that share one in-plane box (block_boxes)
SPACING_TOLERANCE = 0.05  # in-plane voxel sizes within 5 % of the model's are used as they are
THICK_SLICE_FACTOR = 2.0  # slices thicker than this x the model's spacing get a note


def model_spacing(model: SmileModel) -> tuple[float, float, float]:
    """The voxel size (mm, canonical L, P, S) the model was trained at; 1 mm before it was recorded."""
    return tuple(float(v) for v in model.config.get("spacing_mm", (1.0, 1.0, 1.0)))


def resample_slices(volume: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each axial slice of an (X, Y, Z) array resampled to `size` in-plane, pixel centres kept in
    their physical place: shrinking averages the area of each new pixel (what a scanner's larger
    voxel records; torch's antialiased bilinear blurred more and cost the default model another
    0.02 Dice at 0.5 mm, Fourier cropping rang at the brain's edge), enlarging is bilinear."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume.astype(np.float32, copy=False), 2, 0)))[:, None]
    size = tuple(int(n) for n in size)
    if size[0] <= volume.shape[0] and size[1] <= volume.shape[1]:
        out = torch.nn.functional.interpolate(t, size=size, mode="area")
    else:
        out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return np.ascontiguousarray(np.moveaxis(out[:, 0].numpy(), 0, 2))


def brain_box(brain: np.ndarray, multiple: int, margin: int = CROP_MARGIN) -> tuple[slice, slice, np.ndarray]:
    """In-plane bounding box of the brain over all slices, widened by `margin` pixels and with
    its corners on the network's down-sampling grid (multiples of 2**depth from the slice's
    origin), where the volume allows; and the axial indices that hold brain.

    Why: a U-Net is not shift-invariant off its pooling grid, and at a crop edge it sees zero
    padding instead of the features it computes over real background. Measured on the bundled
    sample with the default model against whole slices: a tight, unaligned box changed the
    pseudo-normal inside the brain by up to 0.10 (mean 7.7e-3, in units of V99.5); aligned with
    16 pixels of margin, up to 0.029 (mean 2.3e-4, lesion-mask Dice 0.997); 32 pixels, 0.007.
    With today's default (a gated G, whose gate can open on one side of the crop's edge and not the
    other, and a fill network; scripts/crop_fidelity.py, 2026-12-02): 16 pixels,
    up to 0.58 at a few voxels of the lowest slices (mean 4e-4, Dice 0.995); 16 pixels per block of
    slices (block_boxes), the same maximum (mean 5e-4, Dice 0.994); 32 pixels per block, 0.28
    (mean 1e-4, Dice 0.9995) for about the work of one box of 16 over all slices."""
    xs = np.nonzero(brain.any(axis=(1, 2)))[0]
    ys = np.nonzero(brain.any(axis=(0, 2)))[0]
    zs = np.nonzero(brain.any(axis=(0, 1)))[0]
    bx, by = (aligned_span(int(idx[0]), int(idx[-1]), size, multiple, margin)
              for idx, size in ((xs, brain.shape[0]), (ys, brain.shape[1])))
    return bx, by, zs


def block_boxes(brain: np.ndarray, zs: np.ndarray, multiple: int, block: int = BOX_BLOCK) -> list[tuple]:
    """The brain slices `zs` in runs of `block`, each with the brain box of its own slices:
    [(z indices, bx, by)]. Each box lies inside the whole brain's box (same margin and grid)."""
    out = []
    for i in range(0, len(zs), block):
        z = zs[i:i + block]
        bx, by, _ = brain_box(brain[:, :, z], multiple)
        out.append((z, bx, by))
    return out


@dataclass
class NetGrid:
    """The volume as the networks see it (canonical X x Y x Z, normalised) and the crop that goes
    to them: the box `bx`, `by` in-plane and the axial slices `zs` that hold brain; the networks
    see each block of slices in its own box (`blocks`, block_boxes)."""
    image: np.ndarray
    brain: np.ndarray
    mask: np.ndarray | None  # the caller's lesion mask, or None
    resampled: bool          # True: in-plane at the model's spacing, not the input's
    bx: slice
    by: slice
    zs: np.ndarray
    lesion_z: np.ndarray | None = None  # per axial slice: the caller's mask has a voxel there (else None)
    seg: tuple | None = None     # the recipe segmentor's input volumes (flair.segmentor_volumes), or None: S on `image`
    mirror: int | None = None    # with `seg`: mirror left-right about this index sum (flair.mirror_sum)
    segmentor: str = "S"         # the segmentor that runs: S on `image`, or S_flair / S_t2 on `seg`
    blocks: list = None          # [(z indices, bx, by)]: block_boxes; None: all slices in (bx, by)

    def __post_init__(self):
        if self.blocks is None:
            self.blocks = [(self.zs, self.bx, self.by)]

    @property
    def shape(self) -> tuple:
        return self.brain.shape

    def slices(self, array: np.ndarray, z, box: tuple | None = None) -> np.ndarray:
        """The slices `z` of `array` (X x Y x Z) cropped to `box` (bx, by; default the whole
        brain's), as a stack N x X' x Y'."""
        bx, by = box or (self.bx, self.by)
        return np.moveaxis(array[bx, by][:, :, z], 2, 0)

    def slices_with_neighbours(self, array: np.ndarray, rows: np.ndarray, box: tuple | None = None) -> np.ndarray:
        """The slices of `array` at the N x C indices `rows`, cropped to `box`, as N x C x X' x Y'."""
        bx, by = box or (self.bx, self.by)
        return np.moveaxis(array[bx, by][:, :, rows], (2, 3), (0, 1))

    def segmentor_slices(self, z, box: tuple | None = None) -> np.ndarray:
        """The recipe segmentor's input for the slices `z`, N x C x X' x Y': its volumes, then (with `mirror`)
        each mirrored, mirrored on the whole left-right extent before the crop to `box`."""
        bx, by = box or (self.bx, self.by)
        whole = np.stack([np.moveaxis(v[:, by][:, :, z], 2, 0) for v in self.seg], 1)
        if self.mirror is not None:
            whole = np.concatenate([whole, mirrored(whole, self.mirror)], 1)
        return np.ascontiguousarray(whole[:, :, bx])


@dataclass
class NetOutputs:
    """What the networks gave, on the crop of the networks' grid only (the box `bx`, `by` and the
    axial range `z0` .. `z0` + depth that holds brain): the image I they were given, G(I),
    R(G(I), M), S's lesion probability p and the mask M that R painted. Where the networks did
    not run (outside a block's box: background only), G(I) and R are I, p and M zero.
    Only the crop is kept, so that a large volume costs no full-size copies here."""
    I: np.ndarray
    G: np.ndarray
    R: np.ndarray
    prob: np.ndarray
    lesion: np.ndarray
    z0: int

    @classmethod
    def empty(cls, grid: NetGrid) -> "NetOutputs":
        z0, z1 = int(grid.zs[0]), int(grid.zs[-1]) + 1
        I = np.array(grid.image[grid.bx, grid.by, z0:z1], np.float32)   # a copy: the grid's image is freed
        return cls(I, I.copy(), I.copy(), np.zeros_like(I), np.zeros(I.shape, bool), z0)

    def put(self, z, batch: tuple, grid: NetGrid, box: tuple | None = None) -> None:
        """One batch's (G(I), R, p, M), each N x X' x Y' on `box` (bx, by of `grid`; default its
        whole box), into the slices `z` of the crop."""
        inner = self._inner(grid, box)
        for array, values in zip((self.G, self.R, self.prob, self.lesion), batch):
            if values is not None:   # None: not computed in this pass (synthesis's segment-only pass)
                array[inner[0], inner[1], np.asarray(z) - self.z0] = np.moveaxis(values, 0, 2)

    def take(self, array: np.ndarray, z, grid: NetGrid, box: tuple | None = None) -> np.ndarray:
        """The slices `z` of one of the arrays on `box`, N x X' x Y' (what `put` put there)."""
        inner = self._inner(grid, box)
        return np.ascontiguousarray(np.moveaxis(array[inner[0], inner[1], np.asarray(z) - self.z0], 2, 0))

    def _inner(self, grid: NetGrid, box: tuple | None) -> tuple[slice, slice]:
        bx, by = box or (grid.bx, grid.by)
        return (slice(bx.start - grid.bx.start, bx.stop - grid.bx.start),
                slice(by.start - grid.by.start, by.stop - grid.by.start))


def network_grid(vol: CanonicalVolume, user_mask: np.ndarray | None, model: SmileModel, where: str,
                 tell, seg: tuple | None = None, segmentor: str = "S") -> NetGrid:
    """The networks' grid for `vol`: resampled in-plane to the model's spacing where the input's
    differs by more than SPACING_TOLERANCE (the networks only know that scale), and the brain
    box on the networks' down-sampling grid. `tell` gets a note on thick slices and on resampling.
    `seg`: the input volumes (canonical order) of the recipe segmentor `segmentor` (S_flair, S_t2),
    resampled with the image; None: S runs on the image."""
    trained = model_spacing(model)
    factor = np.array(vol.spacing[:2]) / np.array(trained[:2])
    resampled = bool(np.any(np.abs(factor - 1) > SPACING_TOLERANCE))
    if vol.spacing[2] > THICK_SLICE_FACTOR * trained[2]:
        tell(f"{where}: slices are {vol.spacing[2]:.1f} mm thick, the model was trained on {trained[2]:.1f} mm; "
             "thick slices blur small lesions and lesion edges, so the lesion mask may be less precise"
             + ("; its G also looks at the neighbouring slices, which lie that much farther apart than in "
                "training" if context_of(model.nets["G"]) else ""))
    if resampled:
        size = tuple(max(1, int(round(n * f))) for n, f in zip(vol.image.shape[:2], factor))
        tell(f"{where}: in-plane voxels {vol.spacing[0]:.2f} x {vol.spacing[1]:.2f} mm; slices are resampled "
             f"to the model's {trained[0]:.2f} x {trained[1]:.2f} mm for the networks and back")
        image = resample_slices(vol.image, size)
        brain = resample_slices(vol.brain, size) > 0.5
        mask = None if user_mask is None else resample_slices(user_mask, size) > 0.5
        seg = None if seg is None else tuple(resample_slices(v, size) for v in seg)
    else:
        image, brain, mask = vol.image, vol.brain, user_mask
    multiple = max(model.nets[n].unet.multiple for n in ("G", "R", segmentor))
    bx, by, zs = brain_box(brain, multiple)
    lesion_z = None if user_mask is None else user_mask.any(axis=(0, 1))   # on the input's grid: what R must paint
    mirror = mirror_sum(brain) if seg is not None and model.recipe(segmentor)["mirror"] else None
    return NetGrid(image, brain, mask, resampled, bx, by, zs, lesion_z, seg, mirror, segmentor,
                   block_boxes(brain, zs, multiple, BOX_BLOCK))
