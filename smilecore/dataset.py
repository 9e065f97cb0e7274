"""Preprocessed axial slices, cached on disk as memory-mapped arrays, and the training dataset.

Per case and preprocessing setting the cache holds ``image.npy`` (float16, N x X x Y, values in
[0, 1]), ``mask.npy`` (uint8 whole-tumour mask, absent for unlabelled cases) and ``meta.json``
(the source files with size and modification time, the settings, the kept slice indices).
An entry is reused while all of those are unchanged; otherwise it is rebuilt. ``meta.json`` is
written last and atomically, so an interrupted build is never mistaken for a finished one.

Slices are kept when at least `min_brain_fraction` of their pixels are brain (the paper drops
slices without brain; a few stray voxels at the top of the head are not worth a sample). A
slice is abnormal when any label > 0 is in it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cases import Case
from .files import pid_alive
from .gated import neighbour_index
from .defaults import DEFAULT_MIN_BRAIN_FRACTION  # noqa: F401  (importable from here)
from .volume import CLIP_PERCENTILE, CanonicalVolume, load_label, load_nifti

CACHE_FORMAT = 2  # 2: brain above the background noise (volume.find_brain), voxel size recorded


def _file_signature(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class CachedCase:
    case_id: str
    image: np.ndarray            # memmap float16 (N, X, Y)
    mask: np.ndarray | None      # memmap uint8 (N, X, Y), None when unlabelled
    z: np.ndarray                # axial index of each kept slice in the canonical volume
    brain_box: np.ndarray        # (N, 4) x0, x1, y0, y1 of brain per slice
    lesion_box: np.ndarray       # (N, 4), all -1 where the slice has no lesion
    scale: float                 # V99.5 of the volume
    spacing: tuple = (1.0, 1.0, 1.0)  # voxel size (mm) along the canonical axes
    normalisation: str = "clip-percentile"  # volume.NORMALISATIONS: how the slices were scaled

    @property
    def labeled(self) -> bool:
        return self.mask is not None

    @property
    def abnormal(self) -> np.ndarray:
        return self.lesion_box[:, 0] >= 0


def _boxes(masks: np.ndarray) -> np.ndarray:
    boxes = np.full((len(masks), 4), -1, dtype=np.int32)
    for i, m in enumerate(masks):
        xs, ys = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(xs):
            boxes[i] = (xs[0], xs[-1] + 1, ys[0], ys[-1] + 1)
    return boxes


def cache_case(case: Case, cache_dir: str | Path, modality: str = "t2",
               use_label: bool = True, min_brain_fraction: float = DEFAULT_MIN_BRAIN_FRACTION,
               clip_percentile: float = CLIP_PERCENTILE, normalisation: str = "clip-percentile") -> CachedCase:
    """Preprocess one case into the cache (or reuse its valid entry) and memory-map it."""
    image_path = case.image(modality)
    seg_path = case.seg if (use_label and case.labeled) else None
    settings = {"format": CACHE_FORMAT, "modality": modality, "min_brain_fraction": min_brain_fraction,
                "clip_percentile": clip_percentile, "orientation": "LPS",
                "image": _file_signature(image_path),
                "seg": _file_signature(seg_path) if seg_path else None}
    if normalisation != "clip-percentile":   # keys of the paper's scaling stay as they were
        settings["normalisation"] = normalisation
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    entry = Path(cache_dir) / f"{case.case_id}-{modality}-{key}"
    meta_path = entry / "meta.json"
    if meta_path.is_file():
        try:
            return _open_entry(case.case_id, entry, json.loads(meta_path.read_text()))
        except (OSError, ValueError, KeyError):
            pass  # damaged entry: rebuild below
    for stale in entry.parent.glob(f"{entry.name}.tmp*"):  # half-built by a killed run
        pid = stale.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        data, affine, _ = load_nifti(image_path, note_orientation=False)  # a note is synthesis's
        vol = CanonicalVolume.from_array(data, affine, where=f"image {image_path}",
                                         clip_percentile=clip_percentile, normalisation=normalisation)
        brain_count = vol.brain.sum(axis=(0, 1))
        keep = np.nonzero(brain_count >= min_brain_fraction * vol.brain.shape[0] * vol.brain.shape[1])[0]
        if len(keep) == 0:
            raise ValueError(f"image {image_path}: no axial slice has enough brain voxels")
        images = np.moveaxis(vol.image[:, :, keep], 2, 0)
        np.save(tmp / "image.npy", images.astype(np.float16))
        brain_box = _boxes(np.moveaxis(vol.brain[:, :, keep], 2, 0))
        lesion_box = np.full_like(brain_box, -1)
        if seg_path is not None:
            label = vol.to_canonical_order(load_label(seg_path, data.shape, affine))
            masks = np.moveaxis(label[:, :, keep], 2, 0).astype(np.uint8)
            np.save(tmp / "mask.npy", masks)
            lesion_box = _boxes(masks)
        meta = {"settings": settings, "z": keep.tolist(), "scale": vol.norm.scale, "spacing": vol.spacing,
                "brain_box": brain_box.tolist(), "lesion_box": lesion_box.tolist(),
                "labeled": seg_path is not None}
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _open_entry(case.case_id, entry, json.loads(meta_path.read_text()))


def _open_entry(case_id: str, entry: Path, meta: dict) -> CachedCase:
    image = np.load(entry / "image.npy", mmap_mode="r")
    mask = np.load(entry / "mask.npy", mmap_mode="r") if meta["labeled"] else None
    z = np.asarray(meta["z"], dtype=np.int64)
    if image.shape[0] != len(z) or (mask is not None and mask.shape != image.shape):
        raise ValueError(f"cache entry {entry} is inconsistent")
    return CachedCase(case_id, image, mask, z, np.asarray(meta["brain_box"], np.int32).reshape(-1, 4),
                      np.asarray(meta["lesion_box"], np.int32).reshape(-1, 4), float(meta["scale"]),
                      tuple(meta["spacing"]), meta["settings"].get("normalisation", "clip-percentile"))


class SliceSet(torch.utils.data.Dataset):
    """All kept slices of a list of cached cases. Items are requested as (index, x0, y0):
    the sampler decides the crop so that the data order and crops are a pure function of the
    seed, phase and epoch (this is what makes resuming exact).

    An item's "image" is 1 x H x W, or with `context` k > 0 the slice and its k neighbours on
    each side (2k+1) x H x W, the slice in the middle (gated.neighbour_index), and "masks" their
    labels; "mask" is always the slice's own."""

    def __init__(self, cases: list[CachedCase], crop: int | None = None, context: int = 0):
        self.cases = cases
        self.crop = crop
        self.context = int(context)
        self.rows = [neighbour_index(c.z, self.context) for c in cases]
        self.index = np.array([(ci, si) for ci, c in enumerate(cases) for si in range(len(c.z))],
                              dtype=np.int64).reshape(-1, 2)
        self.labeled = np.array([cases[ci].labeled for ci, _ in self.index], dtype=bool)
        self.abnormal = np.array([cases[ci].labeled and cases[ci].abnormal[si] for ci, si in self.index],
                                 dtype=bool)

    def __len__(self) -> int:
        return len(self.index)

    def slice_shape(self, i: int) -> tuple[int, int]:
        ci, _ = self.index[i]
        return tuple(self.cases[ci].image.shape[1:])

    def crop_origin(self, i: int, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of a random crop: centred on the lesion (half the time, for slices
        with one) or on the brain, and kept inside the slice."""
        if self.crop is None:
            return 0, 0
        ci, si = self.index[i]
        case = self.cases[ci]
        box = case.brain_box[si]
        if case.labeled and case.lesion_box[si, 0] >= 0 and rng.random() < 0.5:
            box = case.lesion_box[si]
        cx = rng.integers(box[0], max(box[1], box[0] + 1))
        cy = rng.integers(box[2], max(box[3], box[2] + 1))
        sx, sy = case.image.shape[1:]
        x0 = int(np.clip(cx - self.crop // 2, 0, max(sx - self.crop, 0)))
        y0 = int(np.clip(cy - self.crop // 2, 0, max(sy - self.crop, 0)))
        return x0, y0

    def __getitem__(self, item):
        i, x0, y0 = item
        ci, si = self.index[i]
        case = self.cases[ci]
        c = self.crop or max(case.image.shape[1:])
        rows = self.rows[ci][si]
        image = np.asarray(case.image[rows, x0:x0 + c, y0:y0 + c], dtype=np.float32)
        if case.mask is not None:
            masks = np.asarray(case.mask[rows, x0:x0 + c, y0:y0 + c], dtype=np.int64)
        else:
            masks = np.zeros(image.shape, dtype=np.int64)
        item = {"image": torch.from_numpy(image), "mask": torch.from_numpy(masks[self.context]),
                "labeled": bool(case.labeled), "index": int(i)}
        if self.context:
            item["masks"] = torch.from_numpy(masks)
        return item


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled (index, x0, y0) items for one epoch, a pure function of (seed, phase, epoch).
    `start` skips the items already consumed before a mid-epoch checkpoint."""

    def __init__(self, slices: SliceSet, seed: int, phase: int, epoch: int, start: int = 0,
                 length: int | None = None):
        rng = np.random.default_rng([seed, phase, epoch])
        n = len(slices) if length is None else length
        order = np.concatenate([rng.permutation(len(slices)) for _ in range(-(-n // max(len(slices), 1)))])[:n]
        self.items = [(int(i), *slices.crop_origin(int(i), rng)) for i in order][start:]

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def collate(items: list[dict]) -> dict:
    """Stack slices (with their neighbours, SliceSet's context), zero-padding to the largest in
    the batch (cases may differ in size)."""
    h = max(it["image"].shape[-2] for it in items)
    w = max(it["image"].shape[-1] for it in items)
    channels = items[0]["image"].shape[0]
    image = torch.zeros(len(items), channels, h, w)
    mask = torch.zeros(len(items), h, w, dtype=torch.long)
    masks = torch.zeros(len(items), channels, h, w, dtype=torch.long) if "masks" in items[0] else None
    for k, it in enumerate(items):
        ih, iw = it["image"].shape[-2:]
        image[k, :, :ih, :iw] = it["image"]
        mask[k, :ih, :iw] = it["mask"]
        if masks is not None:
            masks[k, :, :ih, :iw] = it["masks"]
    batch = {"image": image, "mask": mask, "labeled": torch.tensor([it["labeled"] for it in items]),
             "index": torch.tensor([it["index"] for it in items])}
    if masks is not None:
        batch["masks"] = masks
    return batch
