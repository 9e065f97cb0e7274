"""Volume synthesis: run a trained model over every axial slice of a 3D volume.

Outputs, all in the input's voxel order and geometry, intensities in the input's scale:

- ``pseudo_normal``: G(I). Outside the lesion mask it is written as ``input + V99.5 * (G(I) -
  I)``, i.e. G's change added to the untouched input, so that voxels G leaves alone keep their
  exact value (also those above the clipping percentile); inside the mask it is
  ``V99.5 * G(I)``, so nothing of the input above the clipping percentile (a bright cyst) shows
  through. Background (voxels <= 0) is left as it is. Without a mask, G's change is kept only
  within REACH_MM (8 mm) of the lesion mask (synthesis_blend.kept_near_lesion): farther away
  the pseudo-normal is the input exactly, wherever G's gate opened.
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

The steps of `synthesize`: the inputs checked and put in canonical order (synthesis_inputs.py);
the networks' grid, at the model's spacing and cropped to the brain (synthesis_grid.py); the
networks run in batches with the out-of-memory fallback (`_run_networks`, here); their outputs
back on the input's grid and in its scale (synthesis_blend.py). `synthesize_file` writes them.

FLAIR (flair.py): given a FLAIR and a model with S_flair, S_flair (T2, FLAIR, both mirrored)
finds the lesion instead of S, for everything that follows; G and R still see the T2 alone.
Without a FLAIR, a model with S_t2 (the T2 and its mirror, on its own recipe) has S_t2 find the
lesion instead of S, in the same way (synthesis_segmentor.py).

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
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import folder_lock, remove_stale_temps, signals_deferred, write_failed
from .flair import check_flair_name, flip_averaged, require_flair
from .gated import GatedGenerator, context_of, neighbour_index
from .lesionfill import FILLS, fill_lesion
from .modelfile import SmileModel, default_model_path, load_model
from .networks import FLAIR_NET
from .precision import autocast_dtype, in_bf16
from .synthesis_blend import change_reach, compose_outputs, pass_sigma
from .synthesis_fill import fill_with_network
from .synthesis_grid import NetGrid, NetOutputs, model_spacing, network_grid, resample_slices  # noqa: F401
from .synthesis_inputs import (ModalityMismatch, canonical_lesion_mask, canonical_volume,  # noqa: F401
                               check_lesion_mask, check_modality)
from .synthesis_placement import Placement, is_out_of_memory
from .synthesis_segmentor import main_components, mask_rule, segmentor_input
from .synthesis_write import write_temporaries
from .unet import box_around, folded
from .volume import CanonicalVolume, load_mask, load_nifti  # noqa: F401 (CanonicalVolume: tests)

R_MARGIN = 32   # px around the lesion's in-plane box that R sees; its change is used within FILL_GROW of it
OUTPUT_NAMES = ("pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal", "difference")


class SynthesisCancelled(Exception):
    pass


class SynthesisWarning(UserWarning):
    """Something the user should know about a synthesis that still ran (see `notify`)."""


# Weights re-laid inside inference mode would become inference tensors, and the model could no
# longer be trained after a synthesis.
def _channels_last(model: SmileModel):
    with torch.inference_mode(False), torch.no_grad():
        for net in model.nets.values():
            net.to(memory_format=torch.channels_last)


@dataclass
class SynthesisResult:
    pseudo_normal: np.ndarray
    lesion_probability: np.ndarray
    lesion_mask: np.ndarray
    pseudo_abnormal: np.ndarray
    difference: np.ndarray
    mask_source: str  # "segmentor" or "user"
    notes: list[str] = field(default_factory=list)  # what the user was told (notify)
    segmentor: str = "S"  # the segmentor that ran: "S" or "S_t2" (T2), or "S_flair" (T2 and FLAIR)

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in OUTPUT_NAMES}


def _run_batch(nets, image: np.ndarray, user_mask, threshold: float, device: torch.device,
               channels_last: bool = False, lesion_fill: str = "smooth", context=None, dtype=None, paint=None,
               seg=None, given=None, segment_only: bool = False):
    """G, S and R on a stack of slices (N, X, Y) in [0, 1]; numpy (G(I), R(G(I), M), p, M).
    With a user mask and `lesion_fill` "smooth", G gets the slice with the mask filled
    (lesionfill.fill_lesion) instead of I. `context`: for a G that sees neighbouring slices,
    (the slices with their neighbours, N x C x X x Y; the user mask's slices, or None).
    `dtype`: the autocast dtype (torch.bfloat16), or None for fp32 (precision.py).
    R runs only on the slices that get a lesion (`paint`, one bool per slice; None: where M has
    one), each slice cropped to its lesion's box and R_MARGIN px around it (unet.box_around): elsewhere its
    output is never used (synthesis_blend fades R's change out within FILL_GROW px of the lesion
    in-plane), and R(G(I), M) is given as G(I) there.
    `seg`: the recipe segmentor's input (N x C x X x Y, grid.segmentor_slices), S being S_flair or
    S_t2; None: S sees I. `segment_only`: S alone, (None, None, p, None). `given`: (p, M) of an earlier
    segment-only pass, M cleaned over the whole volume (`main_components`): S does not run again."""
    G, S, R = nets
    I = torch.from_numpy(image[:, None].copy()).to(device)
    S_in = I if seg is None else torch.from_numpy(seg).to(device)
    if channels_last:
        I, S_in = (t.contiguous(memory_format=torch.channels_last) for t in (I, S_in))
    G_in, G_mask = I, None if user_mask is None else user_mask[:, None]
    if context is not None:
        G_in, G_mask = torch.from_numpy(context[0].copy()).to(device), context[1]
    if user_mask is not None and lesion_fill == "smooth":  # in float32, outside autocast; each slice its own mask
        flat = G_in.reshape(-1, 1, *G_in.shape[-2:])
        G_in = fill_lesion(flat, torch.from_numpy(G_mask.reshape(flat.shape).copy()).to(device)).reshape(G_in.shape)
    if channels_last:
        G_in = G_in.contiguous(memory_format=torch.channels_last)
    bf16 = dtype or torch.bfloat16
    with torch.autocast(device.type, dtype=bf16, enabled=dtype is not None):
        if given is None:
            p = torch.softmax(S(S_in).float(), dim=1)[:, 1]
        else:
            p = torch.from_numpy(given[0]).to(device)
        if segment_only:
            return None, None, p.cpu().numpy(), None
        if user_mask is not None:
            M = torch.from_numpy(user_mask.copy()).to(device)
        elif given is not None:
            M = torch.from_numpy(given[1]).to(device)
        else:
            M = p > threshold
        with torch.autocast(device.type, dtype=bf16, enabled=dtype is not None and in_bf16(G)):  # gated: fp32
            # a gated G is held open over M and its rim: what S (or the user) marks is removed
            G_I = (G(G_in, cover=M[:, None]) if isinstance(G, GatedGenerator) else G(G_in)).float()
        paint = M.flatten(1).any(1) if paint is None else torch.from_numpy(np.asarray(paint, bool)).to(device)
        Pab = G_I.clone()
        for i in torch.nonzero(paint)[:, 0].tolist():   # one slice at a time: its box is its own, not the batch's
            box = box_around(M[i:i + 1, None], R.unet.multiple, R_MARGIN)
            if box is None:
                continue
            box = (slice(i, i + 1), slice(None), *box)
            x, m = G_I[box], M[:, None][box].float()
            if channels_last:
                x, m = x.contiguous(memory_format=torch.channels_last), m.contiguous(memory_format=torch.channels_last)
            Pab[box] = R(x, m).float()
    return (G_I[:, 0].cpu().numpy(), Pab[:, 0].cpu().numpy(), p.cpu().numpy(), M.cpu().numpy())


class _Notes:
    """What the user is told during one synthesis: kept (SynthesisResult.notes) and given to
    `notify`, else issued as a SynthesisWarning that points at the line that called `synthesize`
    (frame `code`), whichever of its steps the note comes from."""

    def __init__(self, notify, code):
        self.notes: list[str] = []
        self.notify, self.code = notify, code

    def __call__(self, message: str):
        self.notes.append(message)
        if self.notify is not None:
            self.notify(message)
            return
        frame, level = sys._getframe(1), 2   # level 2: the frame that called this note
        while frame is not None and frame.f_code is not self.code:
            frame, level = frame.f_back, level + 1
        warnings.warn(message, SynthesisWarning, stacklevel=level + 1 if frame is not None else 2)


def _inference_nets(model: SmileModel, segmentor: str, channels_last: bool) -> tuple:
    """G, S (the `segmentor`: S, or S_flair or S_t2 averaged over its recipe's test-time flips) and R
    as synthesis runs them: copies with BatchNorm folded (unet.folded), made once per synthesis and device."""
    if channels_last:   # faster convolutions on CUDA and on CPUs (oneDNN) alike
        _channels_last(model)
    S = model.nets["S"] if segmentor == "S" else flip_averaged(model.nets[segmentor], model.recipe(segmentor))
    originals = (model.nets["G"], S, model.nets["R"])
    nets = tuple(folded(net) for net in originals)
    if channels_last:   # the copies; the model's own weights were re-laid outside inference mode
        nets = tuple(n if n is o else n.to(memory_format=torch.channels_last) for n, o in zip(nets, originals))
    return nets


def _try_batch(nets_on, image, m, threshold: float, device: torch.device, channels_last: bool,
               lesion_fill: str, around, precision: str = "auto", paint=None, seg=None, given=None,
               segment_only: bool = False):
    """`_run_batch` on one batch with the networks `nets_on(device)`: (its outputs, None), or (None,
    the error's first sentences) when it ran out of memory. The error is only summarised here, so
    that the retry runs outside the except block (whose traceback would keep the failed batch's
    tensors alive)."""
    try:
        return _run_batch(nets_on(device), image, m, threshold, device, channels_last, lesion_fill, around,
                          autocast_dtype(precision, device), paint, seg, given, segment_only), None
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        return None, ". ".join(" ".join(str(exc).split()).split(". ")[:2]).rstrip(".")[:160]


def _run_networks(model: SmileModel, grid: NetGrid, threshold: float, batch_size: int, channels_last: bool,
                  lesion_fill: str, progress, cancel, tell, where: str, precision: str = "auto",
                  share: float | None = None) -> NetOutputs:
    """G, S and R over the slices of `grid` that hold brain, each block of slices cropped to its
    own brain box (grid.blocks), in batches within a block under inference mode; out of memory, a
    batch is retried smaller or on the CPU (synthesis_placement.Placement). Slices are independent (BatchNorm in
    eval mode) and a block's box does not depend on the batch, so the result is that of an
    uninterrupted run. With `share` (the segmentor's recipe's "min_component_share") and no user
    mask, S runs over every slice first, its mask loses the 3D components smaller than `share` of
    the largest (`main_components`), and G and R then run with that mask (two passes)."""
    place = Placement(model, tell, where)
    # a G that sees neighbouring slices gets them among the slices with brain, as in training
    # (dataset.SliceSet: beyond the brain's last slice it sees that slice repeated)
    context = context_of(model.nets["G"])
    neighbours = grid.zs[neighbour_index(grid.zs, context)]
    two_passes = share is not None and grid.mask is None
    passes, batch, done = 2 if two_passes else 1, max(1, int(batch_size)), 0
    prepared = {}   # device: its networks (_inference_nets); made again after a move to the CPU

    def nets_on(device):
        if device not in prepared:
            prepared.clear()
            prepared[device] = _inference_nets(model, grid.segmentor, channels_last)
        return prepared[device]

    def run_pass(outs: NetOutputs, given: NetOutputs | None = None, segment_only: bool = False) -> NetOutputs:
        nonlocal batch, done
        first = done
        with torch.inference_mode():
            for zs, bx, by in grid.blocks:
                box, start = (bx, by), 0
                while start < len(zs):
                    if cancel is not None and cancel():
                        raise SynthesisCancelled("synthesis cancelled")
                    z = zs[start:start + batch]
                    image = grid.slices(grid.image, z, box)
                    m = None if grid.mask is None else grid.slices(grid.mask, z, box)
                    around = None
                    if context and not segment_only:   # N x C x X x Y: the slices with their neighbours
                        rows = neighbours[done - first:done - first + len(z)]
                        around = tuple(None if a is None else grid.slices_with_neighbours(a, rows, box)
                                       for a in (grid.image, grid.mask))
                    paint = None if grid.lesion_z is None else grid.lesion_z[z]
                    seg = None if grid.seg is None or given is not None else grid.segmentor_slices(z, box)
                    taken = None if given is None else (given.take(given.prob, z, grid, box),
                                                        given.take(given.lesion, z, grid, box))
                    out, failure = _try_batch(nets_on, image, m, threshold, place.device, channels_last, lesion_fill,
                                              around, precision, paint, seg, taken, segment_only)
                    if out is None:
                        batch = place.after_out_of_memory(batch, batch_size, failure, image)
                        continue
                    outs.put(z, out, grid, box)
                    start, done = start + len(z), done + len(z)
                    if progress is not None:   # in slices: with two passes, each pass's slice counts half
                        progress(done // passes, len(grid.zs))
        return outs
    try:
        if not two_passes:
            return run_pass(NetOutputs.empty(grid))
        segmented = run_pass(NetOutputs.empty(grid), segment_only=True)
        segmented.lesion = main_components(segmented.prob > threshold, share)
        return run_pass(NetOutputs.empty(grid), given=segmented)
    finally:
        place.return_home()


def synthesize(data: np.ndarray, affine: np.ndarray, model: SmileModel, mask: np.ndarray | None = None,
               batch_size: int = 16, progress=None, cancel=None, where: str = "volume",
               modality: str | None = None, notify=None, channels_last: bool = True,
               lesion_fill: str = "smooth", brain: np.ndarray | None = None,
               precision: str = "auto", flair: tuple | None = None, flair_where: str = "FLAIR volume") -> SynthesisResult:
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
    `precision`: "auto", "fp32" or "bf16", the networks' arithmetic (precision.py: "auto" is bf16
    on CUDA and on CPUs with native bf16, fp32 elsewhere).
    `flair`: (array, affine) of a FLAIR of the same head, any grid (flair.py); S_flair then finds the
    lesion (refused before any work when the model has none). `flair_where` names it in messages.
    Without it, a model's S_t2 finds the lesion where the model has one (synthesis_segmentor.py).
    """
    if flair is not None:
        require_flair(model)
    if lesion_fill not in FILLS:
        raise ValueError(f"lesion_fill must be one of {FILLS}, not {lesion_fill!r}")
    autocast_dtype(precision, torch.device("cpu"))   # an unknown precision is refused before any work
    tell = _Notes(notify, sys._getframe().f_code)
    if modality is not None:
        check_modality(model, stated=modality, where=where)
    # canonical LPS order, brain, the model's normalisation; the caller's lesion mask checked
    vol = canonical_volume(data, affine, model, where, brain, tell, lesion_mask=mask)  # a voided image: mask is brain
    user_mask = canonical_lesion_mask(mask, data, vol, where, tell)
    # the networks' grid: the model's in-plane spacing, cropped to the brain
    segmentor, seg = segmentor_input(model, vol, flair, affine, flair_where, where, tell)
    grid = network_grid(vol, user_mask, model, where, tell, seg, segmentor)
    if segmentor == FLAIR_NET:
        # named, since nothing here can tell another patient's FLAIR (BraTS-like cases share one space)
        tell(f"{where}: the lesion mask is {FLAIR_NET}'s, the segmentor that sees the T2 and the FLAIR "
             f"({flair_where}: it must be the same patient's)")
    threshold, share = mask_rule(model, segmentor)
    outs = _run_networks(model, grid, threshold, batch_size, channels_last, lesion_fill, progress, cancel, tell,
                         where, precision, share)
    fill_with_network(model, outs, user_mask is not None, threshold)   # a fill network fills instead of G
    vol.image = grid.image = grid.seg = seg = None   # the networks are done: their inputs are freed
    # back on the input's grid and in its scale, then in its voxel order (views: no copies)
    outputs = compose_outputs(vol, grid, outs, threshold, user_mask, pass_sigma(model.config),
                              change_reach(model.config))
    return SynthesisResult(**{name: vol.to_input_order(outputs[name], copy=False) for name in OUTPUT_NAMES},
                           mask_source="user" if user_mask is not None else "segmentor", notes=tell.notes,
                           segmentor=segmentor)


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
                    lesion_fill: str = "smooth", brain_mask: str | Path | None = None,
                    precision: str = "auto", flair_path: str | Path | None = None) -> dict[str, Path]:
    """Synthesise from a NIfTI file; write each output as NIfTI with the input's header, and a
    PNG overview. Returns the written paths by output name.

    `modality`: the input's modality, if the user states it; else the file name's BraTS suffix
    is used (see `check_modality`). `mask_path`, `brain_mask`: a lesion mask and a brain mask on the
    image's grid (volume.load_mask). With a lesion mask (review mode) the outputs are named
    `NAME_reviewed_<output>`, never replacing the automatic ones. Outputs appear together: each is written to a temporary
    name first, and all are renamed into place once every one has been written. The output
    folder is locked for the run (files.folder_lock: a second run into it is refused), stale
    temporary files of killed runs are removed, and `notify` says when earlier outputs are replaced.
    `precision`: the networks' arithmetic (see `synthesize`). `flair_path`: a FLAIR of the same
    head for the model's S_flair (flair.py; refused before any work by a model without one)."""
    def tell(message: str):
        if notify is not None:
            notify(message)
        else:
            warnings.warn(message, SynthesisWarning, stacklevel=3)

    input_path = Path(input_path)
    model = model or load_model(default_model_path())
    where = f"image {input_path}"
    check_modality(model, stated=modality, name=input_path, where=where)
    flair_where = f"FLAIR {flair_path}"
    if flair_path is not None:
        require_flair(model)
        check_flair_name(flair_path, flair_where)
    data, affine, img = load_nifti(input_path)
    flair = None if flair_path is None else load_nifti(flair_path, "FLAIR")[:2]

    def grid_mask(path, what):
        return None if path is None else load_mask(path, data.shape, affine, what, image_name=str(input_path))
    mask, brain = grid_mask(mask_path, "mask"), grid_mask(brain_mask, "brain mask")
    out_dir = check_output_folder(out_dir)
    with folder_lock(out_dir):
        remove_stale_temps(out_dir)
        result = synthesize(data, affine, model, mask, batch_size, progress, where=where, notify=notify,
                            lesion_fill=lesion_fill, brain=brain, precision=precision, flair=flair,
                            flair_where=flair_where)
        stem = input_path.name.replace(".nii.gz", "").replace(".nii", "")
        stem = stem[:-4] if stem.endswith((".hdr", ".img")) else stem  # an Analyze pair
        if mask_path is not None:  # review mode has its own names: the automatic results stay as they are
            stem += "_reviewed"
        pending: dict[str, tuple[Path, Path]] = {}  # name: (temporary, final)
        try:
            write_temporaries(result, data, affine, img, out_dir, stem, overview, pending)
            pending = {name: pending[name] for name in (*OUTPUT_NAMES, "overview") if name in pending}
            replaced = [final.name for _, final in pending.values() if final.exists()]
            written = {}
            with signals_deferred():  # all renamed or none: a signal waits for the last rename
                for name, (tmp, final) in pending.items():
                    try:
                        os.replace(tmp, final)
                    except OSError as exc:
                        raise write_failed(final, exc) from exc
                    written[name] = final
        finally:
            for tmp, _ in pending.values():
                if tmp.exists():
                    tmp.unlink()
    if replaced:
        tell(f"replaced {len(replaced)} earlier output{'s' if len(replaced) > 1 else ''} in {out_dir} "
             f"({', '.join(replaced[:2])}{', ...' if len(replaced) > 2 else ''})")
    return written
