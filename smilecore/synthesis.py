"""Volume synthesis: run a trained model over every axial slice of a 3D volume.

Outputs, all in the input's voxel order and geometry, intensities in the input's scale:

- ``pseudo_normal``: G(I). Outside the lesion mask it is written as ``input + V99.5 * (G(I) -
  I)``, i.e. G's change added to the untouched input, so that voxels G leaves alone keep their
  exact value (also those above the clipping percentile); inside the mask it is
  ``V99.5 * G(I)``, so nothing of the input above the clipping percentile (a bright cyst) shows
  through. Background (voxels <= 0) is left as it is.
  When the caller gives a lesion mask M (an edited or painted segmentation), the pseudo-normal
  is the blend the reviewer asked for: the input outside M and G's output inside M, where G
  is given the slice with M filled from the tissue around it (`lesion_fill="smooth"`, the
  default; see lesionfill.py) so that nothing of the lesion's own signal reaches G;
  `lesion_fill="none"` gives G the input as it is (the method as published).
- ``lesion_probability`` and ``lesion_mask`` (p > model threshold) from S; when the caller
  gives M, ``lesion_mask`` is that M.
- ``pseudo_abnormal``: R(G(I), M), the same way in the input's scale, inside M; R's change
  fades out over FILL_GROW px around M, and beyond that it is the input exactly.
- ``difference``: input - pseudo_normal (positive where a bright lesion was removed).

Slices are axial in the canonical LPS orientation whatever the input's voxel order (see
volume.py), limited to the slices and the in-plane bounding box that hold brain, and run in
batches under ``torch.inference_mode``. A slice smaller than the networks' input multiple
(2**depth) is zero-padded by the U-Net and cropped back, so any volume size works. An oblique
acquisition is processed along the voxel axis nearest to axial, without resampling; above
`OBLIQUE_WARNING_DEG` the user is told the slices are tilted.

Voxel size: the networks see slices at the model's training spacing (``spacing_mm`` in the model
file; 1 mm for files that predate it). Where the input's in-plane voxel size differs by more than
`SPACING_TOLERANCE`, each axial slice is resampled to it (`resample_slices`) before the
networks and the networks' *change* is resampled back, so tissue the generator leaves alone
keeps its exact input values at the input's resolution. Through-plane nothing is resampled
(each slice is processed as it is); slices thicker than `THICK_SLICE_FACTOR` x the training
spacing get a note, since their partial-volume blur costs accuracy.

Brain and masks (volume.py): the brain is found above the background's noise (or given by the
caller); what lies outside it is left unchanged. A lesion mask covering more than
`MAX_LESION_SHARE` of the brain, or lying mostly outside it, is refused.

Robustness (docs/BAD_INPUTS.md):
- Modality: a model is used only on images of its own modality. When the caller states the
  input's modality, or the input's name carries a BraTS modality suffix (``_flair``, ``-t1n``,
  ...), and it differs from the model's, synthesis is refused (`ModalityMismatch`) before any
  work; a stated modality overrides the name.
- Out of memory: a batch that does not fit is retried at half the size, down to one slice;
  if one slice does not fit on a GPU, synthesis continues on the CPU (and the model returns to
  its device afterwards). Each step is reported through `notify` and kept in
  ``SynthesisResult.notes``. The results equal those of an uninterrupted run (slices are
  independent: BatchNorm runs in eval mode).
- Files: the output folder is checked for writing before any work and locked for the run (a
  second run into it is refused); all outputs are written to temporary names and renamed into
  place only when every one was written, so a full disk, a failure, Ctrl-C or SIGTERM (turned
  into an exception by the CLI) leaves the files of an earlier run whole and no temporary file
  behind; those of a SIGKILLed run are removed by the next run into the folder.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .cases import canonical_modality, modality_from_name
from .files import folder_lock, remove_stale_temps, signals_deferred, temp_name, write_failed, write_temp_like
from .gated import context_of, neighbour_index
from .lesionfill import FILL_GROW, FILLS, fill_lesion
from .modelfile import SmileModel, default_model_path, load_model
from .volume import OBLIQUE_WARNING_DEG, CanonicalVolume, VolumeError, load_mask, load_nifti

OUTPUT_NAMES = ("pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal", "difference")


class SynthesisCancelled(Exception):
    pass


class ModalityMismatch(ValueError):
    """The input's modality (stated, or from its name) is not the model's."""


class SynthesisWarning(UserWarning):
    """Something the user should know about a synthesis that still ran (see `notify`)."""


def check_modality(model: SmileModel, stated: str | None = None, name: str | Path | None = None,
                   where: str = "volume") -> str | None:
    """Refuse an input whose modality differs from the model's. The input's modality is the
    `stated` one, else the one its `name` carries as a BraTS suffix; unknown (None) passes.
    Returns the input's modality."""
    source = "stated"
    if stated:
        modality = canonical_modality(stated)
    else:
        modality = modality_from_name(name) if name is not None else None
        source = f"from its name {Path(str(name)).name}"
    model_modality = model.config.get("modality")
    if modality is None or model_modality is None or canonical_modality(model_modality) == modality:
        return modality
    model_name = f"model file {model.path}" if model.path else "the model"
    raise ModalityMismatch(
        f"{where} is {modality} ({source}) but {model_name} was trained on {model_modality}: a model only "
        f"works on its own modality. Choose a {modality} model, or, if the image really is "
        f"{model_modality}, state it (smile synthesize --modality {model_modality})")


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError))


def _is_accelerator(device: torch.device) -> bool:
    return device.type != "cpu"


# Weights are moved or re-laid outside inference mode: re-made inside it they would become
# inference tensors, and the model could no longer be trained after a synthesis.
def _move(model: SmileModel, device: torch.device):
    with torch.inference_mode(False), torch.no_grad():
        model.to(device)


def _channels_last(model: SmileModel):
    with torch.inference_mode(False), torch.no_grad():
        for net in model.nets.values():
            net.to(memory_format=torch.channels_last)


def _release(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class SynthesisResult:
    pseudo_normal: np.ndarray
    lesion_probability: np.ndarray
    lesion_mask: np.ndarray
    pseudo_abnormal: np.ndarray
    difference: np.ndarray
    mask_source: str  # "segmentor" or "user"
    notes: list[str] = field(default_factory=list)  # what the user was told (notify)

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in OUTPUT_NAMES}


CROP_MARGIN = 16  # pixels of background kept around the brain box (see _brain_box)
SPACING_TOLERANCE = 0.05  # in-plane voxel sizes within 5 % of the model's are used as they are
THICK_SLICE_FACTOR = 2.0  # slices thicker than this x the model's spacing get a note
MAX_LESION_SHARE = 0.5    # a lesion mask larger than this share of the brain is refused
OUTSIDE_NOTE_ML = 5.0     # bright tissue outside the brain above this volume gets a note


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


def check_lesion_mask(mask: np.ndarray, brain: np.ndarray, where: str, tell) -> None:
    """Refuse a lesion mask that is not one: most of the brain, or mostly outside it."""
    n = int(mask.sum())
    inside = int((mask & brain).sum())
    share = inside / max(int(brain.sum()), 1)
    if share > MAX_LESION_SHARE:
        raise VolumeError(f"{where}: the lesion mask covers {100 * share:.0f} % of the brain (at most "
                          f"{100 * MAX_LESION_SHARE:.0f} % is taken as a lesion); is it a brain mask? "
                          "(a brain mask goes to --brain-mask)")
    if n and inside < n / 2:
        raise VolumeError(f"{where}: {n - inside} of the lesion mask's {n} voxels lie outside the brain: the "
                          "mask does not belong to this image")
    if inside < n:
        tell(f"{where}: {n - inside} of the lesion mask's {n} voxels lie outside the brain and are ignored")


def _brain_box(brain: np.ndarray, multiple: int, margin: int = CROP_MARGIN) -> tuple[slice, slice, np.ndarray]:
    """In-plane bounding box of the brain over all slices, widened by `margin` pixels and with
    its corners on the network's down-sampling grid (multiples of 2**depth from the slice's
    origin), where the volume allows; and the axial indices that hold brain.

    Why: a U-Net is not shift-invariant off its pooling grid, and at a crop edge it sees zero
    padding instead of the features it computes over real background. Measured on the bundled
    sample with the default model against whole slices: a tight, unaligned box changed the
    pseudo-normal inside the brain by up to 0.10 (mean 7.7e-3, in units of V99.5); aligned with
    16 pixels of margin, up to 0.029 (mean 2.3e-4, lesion-mask Dice 0.997); 32 pixels, 0.007."""
    xs = np.nonzero(brain.any(axis=(1, 2)))[0]
    ys = np.nonzero(brain.any(axis=(0, 2)))[0]
    zs = np.nonzero(brain.any(axis=(0, 1)))[0]
    boxes = []
    for idx, size in ((xs, brain.shape[0]), (ys, brain.shape[1])):
        lo = max(0, int(idx[0]) - margin) // multiple * multiple
        hi = min(size, -(-(int(idx[-1]) + 1 + margin) // multiple) * multiple)
        boxes.append(slice(lo, hi))
    return boxes[0], boxes[1], zs


def _run_batch(nets, image: np.ndarray, user_mask, threshold: float, device: torch.device,
               channels_last: bool = False, lesion_fill: str = "smooth", context=None):
    """G, S and R on a stack of slices (N, X, Y) in [0, 1]; numpy (G(I), R(G(I), M), p, M).
    With a user mask and `lesion_fill` "smooth", G gets the slice with the mask filled
    (lesionfill.fill_lesion) instead of I. `context`: for a G that sees neighbouring slices,
    (the slices with their neighbours, N x C x X x Y; the user mask's slices, or None)."""
    G, S, R = nets
    amp = device.type == "cuda"
    I = torch.from_numpy(image[:, None].copy()).to(device)
    if channels_last:
        I = I.contiguous(memory_format=torch.channels_last)
    G_in, G_mask = I, None if user_mask is None else user_mask[:, None]
    if context is not None:
        G_in, G_mask = torch.from_numpy(context[0].copy()).to(device), context[1]
    if user_mask is not None and lesion_fill == "smooth":  # in float32, outside autocast; each slice its own mask
        flat = G_in.reshape(-1, 1, *G_in.shape[-2:])
        G_in = fill_lesion(flat, torch.from_numpy(G_mask.reshape(flat.shape).copy()).to(device)).reshape(G_in.shape)
    if channels_last:
        G_in = G_in.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        G_I = G(G_in).float()
        p = torch.softmax(S(I).float(), dim=1)[:, 1]
        if user_mask is not None:
            M = torch.from_numpy(user_mask.copy()).to(device)
        else:
            M = p > threshold
        Pab = R(G_I, M[:, None].float()).float()
    return (G_I[:, 0].cpu().numpy(), Pab[:, 0].cpu().numpy(), p.cpu().numpy(), M.cpu().numpy())


def synthesize(data: np.ndarray, affine: np.ndarray, model: SmileModel, mask: np.ndarray | None = None,
               batch_size: int = 16, progress=None, cancel=None, where: str = "volume",
               modality: str | None = None, notify=None, channels_last: bool = True,
               lesion_fill: str = "smooth", brain: np.ndarray | None = None) -> SynthesisResult:
    """Run G, S and R over `data` (3D array with its voxel-to-world `affine`).

    `mask`: optional lesion mask in the same voxel order as `data`; it replaces S's mask for
    R and for the blend. `progress(done, total)` is called after each batch; `cancel()`
    returning True stops the run with SynthesisCancelled before any output exists.
    `modality`: the input's modality when the caller knows it (see `check_modality`).
    `notify(message)` receives what the user should know (an oblique input, an out-of-memory
    retry or the CPU fallback); without it those messages are issued as SynthesisWarning.
    `channels_last`: NHWC tensors and weights (same results; measured 1.5x faster convolutions on
    the 2-core CPU, 1.6-1.9x in training on an H200).
    `lesion_fill`: "smooth" or "none", what G gets when a `mask` is given (see the module docstring).
    `brain`: the caller's brain mask in the voxel order of `data` (else it is found, volume.find_brain).
    """
    if lesion_fill not in FILLS:
        raise ValueError(f"lesion_fill must be one of {FILLS}, not {lesion_fill!r}")
    notes: list[str] = []

    def tell(message: str):
        notes.append(message)
        if notify is not None:
            notify(message)
        else:
            warnings.warn(message, SynthesisWarning, stacklevel=3)

    if modality is not None:
        check_modality(model, stated=modality, where=where)
    vol = CanonicalVolume.from_array(data, affine, where=where, brain=brain,
                                     clip_percentile=model.config["normalisation"]["clip_percentile"],
                                     normalisation=model.normalisation)
    if vol.obliquity_deg > OBLIQUE_WARNING_DEG:
        tell(f"{where}: the voxel axes are {vol.obliquity_deg:.0f} degrees oblique to the anatomical axes; "
             "slices are taken along the voxel axis nearest to axial without resampling, so they are "
             "tilted by that much from the axial slices the model was trained on (resample the image to "
             "axial for the best result)")
    if vol.found.outside_ml > OUTSIDE_NOTE_ML:
        tell(f"{where}: {vol.found.outside_ml:.0f} mL of bright voxels lie apart from the brain (skull, scalp or "
             "noise); they are left unchanged")
    user_mask = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != np.shape(data):
            raise VolumeError(f"{where}: lesion mask shape {mask.shape} differs from the image's {np.shape(data)}")
        user_mask = vol.to_canonical_order(mask > 0)
        check_lesion_mask(user_mask, vol.brain, where, tell)
    # the networks' grid: the model's in-plane spacing
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
        net_image = resample_slices(vol.image, size)
        net_brain = resample_slices(vol.brain, size) > 0.5
        net_mask = None if user_mask is None else resample_slices(user_mask, size) > 0.5
    else:
        net_image, net_brain, net_mask = vol.image, vol.brain, user_mask
    nets = tuple(model.nets[n] for n in "GSR")
    device = home = next(nets[0].parameters()).device
    multiple = max(net.unet.multiple for net in nets)
    bx, by, zs = _brain_box(net_brain, multiple)
    # a G that sees neighbouring slices gets them among the slices with brain, as in training
    # (dataset.SliceSet: beyond the brain's last slice it sees that slice repeated)
    context = context_of(nets[0])
    neighbours = zs[neighbour_index(zs, context)]
    threshold = float(model.config.get("lesion_threshold", 0.5))

    shape = net_image.shape
    G_out = np.zeros(shape, np.float32)
    R_out = np.zeros(shape, np.float32)
    prob = np.zeros(shape, np.float32)
    lesion = np.zeros(shape, bool)
    total = len(zs)
    batch = max(1, int(batch_size))
    moved = False
    start = 0
    try:
        with torch.inference_mode():
            while start < total:
                if cancel is not None and cancel():
                    raise SynthesisCancelled("synthesis cancelled")
                z = zs[start:start + batch]
                image = np.moveaxis(net_image[bx, by][:, :, z], 2, 0)
                m = None if net_mask is None else np.moveaxis(net_mask[bx, by][:, :, z], 2, 0)
                around = None
                if context:   # N x C x X x Y: the slices with their neighbours
                    rows = neighbours[start:start + len(z)]
                    around = tuple(None if a is None else np.moveaxis(a[bx, by][:, :, rows], (2, 3), (0, 1))
                                   for a in (net_image, net_mask))
                out, failure = None, None
                try:
                    nhwc = channels_last   # faster convolutions on CUDA and on CPUs (oneDNN) alike
                    if nhwc:
                        _channels_last(model)
                    out = _run_batch(nets, image, m, threshold, device, nhwc, lesion_fill, around)
                except (RuntimeError, MemoryError) as exc:
                    if not _is_out_of_memory(exc):
                        raise
                    failure = ". ".join(" ".join(str(exc).split()).split(". ")[:2]).rstrip(".")[:160]
                if out is None:  # out of memory (handled here, outside the except block)
                    _release(device)
                    if batch > 1:
                        batch = max(1, batch // 2)
                        tell(f"{where}: out of memory on {device} ({failure}); retrying with {batch} "
                             f"slice{'s' if batch > 1 else ''} per batch")
                        continue
                    if _is_accelerator(device) and not moved:
                        tell(f"{where}: out of memory on {device} even one slice at a time; continuing "
                             "on the CPU (slower)")
                        device, moved, batch = torch.device("cpu"), True, max(1, int(batch_size))
                        _move(model, device)
                        _release(home)
                        continue
                    raise RuntimeError(f"{where}: out of memory on {device} even for one slice of "
                                       f"{image.shape[1]} x {image.shape[2]} pixels ({failure})")
                G_b, R_b, p_b, M_b = out
                G_out[bx, by, z] = np.moveaxis(G_b, 0, 2)
                R_out[bx, by, z] = np.moveaxis(R_b, 0, 2)
                prob[bx, by, z] = np.moveaxis(p_b, 0, 2)
                lesion[bx, by, z] = np.moveaxis(M_b, 0, 2)
                start += len(z)
                if progress is not None:
                    progress(start, total)
    finally:
        if moved:
            back = None
            try:
                _move(model, home)
                back = True
            except (RuntimeError, MemoryError) as exc:
                if not _is_out_of_memory(exc):
                    raise
            if not back:  # a partial move would leave the networks on two devices
                _move(model, torch.device("cpu"))
                _release(home)
                tell(f"the model stays on the CPU: moving it back to {home} ran out of memory")

    if resampled:  # the networks' change goes back to the input's grid; the input's detail stays
        full = vol.image.shape[:2]
        G_image, R_image = resample_slices(G_out, full), resample_slices(R_out, full)
        synthesised = np.zeros(shape, np.float32)
        synthesised[bx, by] = 1.0
        G_change = resample_slices((G_out - net_image) * synthesised, full)
        R_change = resample_slices((R_out - net_image) * synthesised, full)
        prob = resample_slices(prob, full)
        lesion = prob > threshold
        bx, by = slice(0, full[0]), slice(0, full[1])
    else:
        G_image, R_image, G_change, R_change = G_out, R_out, G_out - net_image, R_out - net_image
    # blend only inside the box that was synthesised (outside it every change is 0)
    brain = vol.brain
    prob *= brain
    if user_mask is None:
        lesion &= brain
    else:
        lesion = user_mask.astype(bool)
    norm = vol.norm
    box = (bx, by, slice(int(zs[0]), int(zs[-1]) + 1))
    # Inside the lesion the network's image replaces the input: input + scale * (net - I) would
    # carry over whatever the input had above the clipping percentile (a bright cyst kept its
    # excess as a blob in the pseudo-normal). Elsewhere the change is added to the exact input.
    replaced = brain[box] & lesion[box]
    raw = vol.raw[box]
    change = G_change[box] * norm.scale
    change[replaced] = norm.invert(G_image[box][replaced]) - raw[replaced]
    change[~replaced if user_mask is not None else ~brain[box]] = 0.0
    pseudo_normal = vol.raw.copy()
    pseudo_normal[box] += change
    difference = np.zeros(vol.raw.shape, np.float32)
    difference[box] = -change
    painted = R_change[box] * norm.scale
    painted[replaced] = norm.invert(R_image[box][replaced]) - raw[replaced]
    # R paints a lesion at M: its change fades out over FILL_GROW px around M (in-plane distance)
    # and beyond that the pseudo-abnormal is the input exactly, not R's faint rewrite of the
    # whole slice (its up-sampling checkerboard); the fade avoids a step at the rim's edge
    if lesion[box].any():
        distance = ndimage.distance_transform_edt(~lesion[box], sampling=(1.0, 1.0, 1e6))
        painted *= np.clip(1.0 - distance / (FILL_GROW + 1), 0.0, 1.0)
    else:
        painted[...] = 0.0
    painted[~(brain[box] | lesion[box])] = 0.0
    pseudo_abnormal = vol.raw.copy()
    pseudo_abnormal[box] += painted
    back = vol.to_input_order
    return SynthesisResult(
        pseudo_normal=back(pseudo_normal),
        lesion_probability=back(prob),
        lesion_mask=back(lesion.astype(np.uint8)),
        pseudo_abnormal=back(pseudo_abnormal),
        difference=back(difference),
        mask_source="user" if user_mask is not None else "segmentor",
        notes=notes)


def check_output_folder(out_dir: str | Path) -> Path:
    """Create `out_dir` if needed and make sure a file can be written in it; else an OSError
    naming the folder. Called before any work, so that a long run never ends in a failed write."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".smile-write-test-"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"output folder {out_dir} cannot be written ({exc.strerror or exc}); "
                                 "choose another folder") from None
    return out_dir


def synthesize_file(input_path: str | Path, out_dir: str | Path, model: SmileModel | None = None,
                    mask_path: str | Path | None = None, batch_size: int = 16, progress=None,
                    overview: bool = True, modality: str | None = None, notify=None,
                    lesion_fill: str = "smooth", brain_mask: str | Path | None = None) -> dict[str, Path]:
    """Synthesise from a NIfTI file; write each output as NIfTI with the input's header, and a
    PNG overview. Returns the written paths by output name.

    `modality`: the input's modality, if the user states it; else the file name's BraTS suffix
    is used (see `check_modality`). `mask_path`, `brain_mask`: a lesion mask and a brain mask on the
    image's grid (volume.load_mask). Outputs appear together: each is written to a temporary
    name first, and all are renamed into place once every one has been written. The output
    folder is locked for the run (files.folder_lock: a second run into it is refused), stale
    temporary files of killed runs are removed, and `notify` says when earlier outputs are replaced."""
    from .overview import overview_image

    def tell(message: str):
        if notify is not None:
            notify(message)
        else:
            warnings.warn(message, SynthesisWarning, stacklevel=3)

    input_path = Path(input_path)
    model = model or load_model(default_model_path())
    where = f"image {input_path}"
    check_modality(model, stated=modality, name=input_path, where=where)
    data, affine, img = load_nifti(input_path)

    def grid_mask(path, what):
        return None if path is None else load_mask(path, data.shape, affine, what, image_name=str(input_path))
    mask, brain = grid_mask(mask_path, "mask"), grid_mask(brain_mask, "brain mask")
    out_dir = check_output_folder(out_dir)
    with folder_lock(out_dir):
        remove_stale_temps(out_dir)
        result = synthesize(data, affine, model, mask, batch_size, progress, where=where, notify=notify,
                            lesion_fill=lesion_fill, brain=brain)
        stem = input_path.name.replace(".nii.gz", "").replace(".nii", "")
        pending: list[tuple[Path, Path]] = []  # (temporary, final)
        try:
            for name, arr in result.arrays().items():
                dtype = np.uint8 if name == "lesion_mask" else np.float32
                final = out_dir / f"{stem}_{name}.nii.gz"
                pending.append((write_temp_like(arr, img, final, dtype=dtype), final))
            if overview:
                final = out_dir / f"{stem}_overview.png"
                tmp = temp_name(final)
                pending.append((tmp, final))
                try:
                    overview_image(data, affine, result).save(tmp, format="PNG")
                except OSError as exc:
                    raise write_failed(final, exc, "PNG overview") from exc
            replaced = [final.name for _, final in pending if final.exists()]
            written = {}
            with signals_deferred():  # all renamed or none: a signal waits for the last rename
                for (tmp, final), name in zip(pending, [*result.arrays(), "overview"]):
                    try:
                        os.replace(tmp, final)
                    except OSError as exc:
                        raise write_failed(final, exc) from exc
                    written[name] = final
        finally:
            for tmp, _ in pending:
                if tmp.exists():
                    tmp.unlink()
    if replaced:
        tell(f"replaced {len(replaced)} earlier output{'s' if len(replaced) > 1 else ''} in {out_dir} "
             f"({', '.join(replaced[:2])}{', ...' if len(replaced) > 2 else ''})")
    return written
