"""Evaluation of a model on the test cases of a data folder: the paper's identity and
healthiness, Dice of S, and the error inside lesions whose healthy truth is known.

Which slices count:
- identity and healthiness: the abnormal slices of the test cases (label > 0 somewhere), whole
  slices in the canonical orientation, normalised intensities (data range 1);
- Dice of S: every kept slice of each test case, pooled per case (and over all test voxels for
  the overall figure); S's threshold is the model's (0.5);
- through-plane change (metrics.through_plane_change): every kept slice of each test case, G's
  output inside the brain (the input outside), pooled over the test cases: inside the expert's
  lesion for the pseudo-normal and the input, and in healthy tissue;
- known truth: lesions transplanted into normal slices of host cases (`smile evaluate`: the test
  cases and any --known-truth-cases; lesions by default from other labelled cases, see
  `transplant_set`; the set and the reference fills are built in known_truth.py), errors
  inside the transplanted lesion only, pooled (`known_truth`) and per host case
  (`known_truth_per_case`), for: the model without a mask;
  the model with the lesion mask given (review mode as synthesis runs it: G on the input with
  the mask filled), and without the fill (the method as published: the same as without a mask
  inside the lesion); G on the input with S's own mask filled (an addition that was tried and is
  not used, see README); and the references: untouched, mean-of-surroundings fill, smooth fill
  (lesionfill.smooth_fill) and the best constant (a ceiling for flat fills, uses the truth).
  Identity and healthiness are reported for the S-mask fill too (`S_mask_fill`).
- striping against known truth: lesion volumes (8 adjacent slices) transplanted into 8
  adjacent normal slices of the test cases (`transplant_slabs`); the through-plane change
  inside the lesion for the truth, the input, the model with and without the mask given, and
  the mean fill (`known_truth_through_plane`).
- healthy brain (`healthy_brain`): each test case's tumour replaced by the mirrored healthy side
  (`mirrored_healthy`); how much of it S calls lesion and how much G changes it (`healthy_brain`).
- normal anatomy called lesion (metrics.normal_anatomy_called_lesion, issue 23): over every kept
  slice of each test case (taken as adjacent), the share of bright non-tumour tissue S marks and
  the share of the healthy-ised brain (tumour voxels alone replaced, mirrored about the brain's
  mid-sagittal plane, `mirror_axis`) S marks.

Through synthesis (`through_synthesis`): the figures above run G and S on cached slices; what a
user gets is `synthesize` on the volume, with the segmentor it chooses (S, or the model's S_t2), the
fill network, test-time flips and crops. Per test case, from its T2 file (no mask): the lesion
mask's whole-tumour Dice against the expert's, every slice; and the share of brain more than
OUTSIDE_GROW voxels from the expert lesion changed by more than 1 % of the brain's V99.5.

A G that sees neighbouring slices (2.5D, gated.py) gets them everywhere: from the case's kept
slices, from the whole mirrored healthy volume, from the transplanted slab (its end slices see
themselves repeated), and in the known-truth set the donor's neighbouring lesion slices pasted
into the host's (`transplant_set(context=k)`; the centre slices are those a 2D G is measured on).

Spred, the segmentor that judges healthiness, is a separate S-shaped U-Net trained with plain
cross-entropy on the real labelled training slices of the same split (never the adversarial
S). It is trained once per (training cases, settings) and cached as a file.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .dataset import CachedCase, EpochSampler, SliceSet
from .gated import GatedGenerator, context_of, neighbour_index
from .known_truth import (PAIRINGS, TransplantSet, best_constant, mean_fill, transplant_set,  # noqa: F401
                          transplant_slabs)
from .lesionfill import fill_lesion_array, grow
from .modelfile import SmileModel, atomic_torch_save
from .pseudonormal import (G_input, known_truth_figure, pseudo_normal, pseudo_normal_mask_given,  # noqa: F401
                           pseudo_normal_S_mask_fill, run_net, slices_for_G)
from .train import collate
from .volume import Normalisation
from .unet import Segmentor


OUTSIDE_GROW = 4      # pixels the expert lesion is grown by before "outside the lesion" is counted


def default_cache_dir() -> Path:
    """Where evaluation caches slices and Spred unless told otherwise: $SMILE_CACHE, else
    $XDG_CACHE_HOME/smile, else ~/.cache/smile (never the current folder: it grows to hundreds of MB)."""
    import os
    if os.environ.get("SMILE_CACHE"):
        return Path(os.environ["SMILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "smile"


# ---- Spred ---------------------------------------------------------------------------------
@dataclass
class SpredSettings:
    base: int = 16
    depth: int = 4
    norm: str = "batch"
    steps: int = 600
    batch_size: int = 8
    lr: float = 1e-3
    crop: int | None = 128
    seed: int = 0


def train_segmentor(cases: list[CachedCase], settings: SpredSettings, progress=None) -> Segmentor:
    """A plain segmentor (S's architecture, cross-entropy) trained for `settings.steps` steps on
    the slices of `cases` (unlabelled cases count as all background), seeded."""
    torch.manual_seed(settings.seed)
    net = Segmentor(settings.base, settings.depth, settings.norm)
    slices = SliceSet(cases, settings.crop)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sampler = EpochSampler(slices, settings.seed, 0, 0, length=settings.steps * settings.batch_size)
    net.train()
    loader = torch.utils.data.DataLoader(slices, batch_size=settings.batch_size, sampler=sampler, collate_fn=collate)
    for step, batch in enumerate(loader):
        loss = F.cross_entropy(net(batch["image"]), batch["mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress:
            progress(step + 1, settings.steps)
    return net.eval()


def train_spred(train_cases: list[CachedCase], settings: SpredSettings, cache_dir: str | Path,
                progress=None) -> Segmentor:
    """Spred for these training cases, loaded from the cache or trained and cached."""
    labeled = [c for c in train_cases if c.labeled]
    if not labeled:
        raise ValueError("Spred needs labelled training cases")
    what = {"cases": sorted(c.case_id for c in labeled), **settings.__dict__}
    scalings = sorted({c.normalisation for c in labeled})
    if len(scalings) > 1:
        raise ValueError(f"Spred's training cases are scaled differently ({', '.join(scalings)})")
    if scalings != ["clip-percentile"]:  # a Spred of another scaling is another Spred (the paper's keeps its key)
        what["normalisation"] = scalings[0]
    key = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"spred-{key}.pt"
    if path.is_file():
        net = Segmentor(settings.base, settings.depth, settings.norm)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["S"])
        return net.eval()
    net = train_segmentor(labeled, settings, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": "smile-spred", "S": net.state_dict(), "settings": json.dumps(settings.__dict__)},
                      path)
    return net


# ---- nearly healthy brains -------------------------------------------------------------------
HEALTHY_GROW = 3           # voxels the expert's whole-tumour label is grown by before it is replaced
HEALTHY_MIN_REPLACED = 0.9  # a slice counts only when this share of its grown lesion could be replaced
HEALTHY_CHANGE = 0.01      # |G(I) - I| above this (normalised units, data range 1) counts as a change


@dataclass
class MirroredBrain:
    image: np.ndarray     # K x H x W, the kept slices with the tumour replaced by mirrored tissue
    measured: np.ndarray  # K x H x W bool, brain voxels the figures count (unreplaced lesion left out)
    replaced: np.ndarray  # K x H x W bool, voxels taken from the mirrored side
    slices: np.ndarray    # indices (into the case's kept slices) of the K slices
    lesion_voxels: int    # grown-lesion voxels over all abnormal slices of the case
    replaced_voxels: int  # of which replaceable by lesion-free mirrored brain
    rescaled_by: float = 1.0  # the factor re-normalising the healthy volume applied (see mirrored_healthy)
    context: np.ndarray | None = None  # K x (2k+1) x H x W, the K slices with their neighbours (a 2.5D G's input)


def mirror_axis(brain: np.ndarray) -> int:
    """Twice the mid-sagittal coordinate: voxel x mirrors to `mirror_axis - x` along axis 1 of an
    N x X x Y stack (canonical LPS, X left-right). The plane goes through the brain's centre of
    mass over the whole case rather than the volume centre, so a volume that is not centred (a
    cropped scan, the generated cohort) still mirrors onto itself; the tumour hardly moves it
    (it lies inside the brain)."""
    xs = np.nonzero(brain)[1]
    return int(round(2 * xs.mean())) if len(xs) else brain.shape[1] - 1


def mirrored_healthy(case: CachedCase, grow_by: int = HEALTHY_GROW,
                     min_replaced: float = HEALTHY_MIN_REPLACED, normalisation: str | None = None,
                     context: int = 0) -> MirroredBrain:
    """A nearly healthy brain from a labelled case: on each abnormal slice the expert's whole-tumour
    label, grown by `grow_by` voxels in-plane (the label's edge is not exact) and kept inside the
    brain, is replaced by the left-right mirrored tissue, only where that tissue is itself brain
    and away from the (grown) lesion. Slices where less than `min_replaced` of the grown lesion
    could be replaced are left out; in the slices kept, the few voxels not replaced are left out
    of `measured`.

    `normalisation` (volume.NORMALISATIONS): the healthy volume is scaled again as synthesis would
    scale it, fitted on its brain without the unreplaced lesion (the case was scaled with its
    tumour): what a model sees of the same brain scanned without the tumour. None: as cached.
    `context` k > 0: `context` holds each kept slice with its k neighbours on each side, from the
    whole healthy volume (a 2.5D G's input)."""
    images = np.asarray(case.image, np.float32)
    brain = images > 0
    k = mirror_axis(brain)
    grown = grow(torch.from_numpy(np.asarray(case.mask) > 0)[:, None], grow_by)[:, 0].numpy() > 0
    grown &= brain
    # mirrored[x] = original[k - x]; outside the volume there is no tissue to take
    src = k - np.arange(images.shape[1])
    valid = (src >= 0) & (src < images.shape[1])
    src = np.clip(src, 0, images.shape[1] - 1)
    mirrored, m_brain, m_lesion = (np.where(valid[None, :, None], a[:, src], 0) for a in (images, brain, grown))
    replaced = grown & (m_brain > 0) & ~(m_lesion > 0)
    per_slice = grown.sum(axis=(1, 2))
    share = replaced.sum(axis=(1, 2)) / np.maximum(per_slice, 1)
    keep = np.nonzero((per_slice > 0) & (share >= min_replaced))[0]
    image = np.where(replaced, mirrored, images)
    measured = brain & ~(grown & ~replaced)
    factor = 1.0
    if normalisation is not None:  # cached units: background 0, so the fitted scale is relative
        factor = 1.0 / Normalisation.fit(image, measured, case.case_id, method=normalisation).scale
        image = np.clip(image * factor, 0.0, 1.0)
    return MirroredBrain(image[keep], measured[keep], replaced[keep], keep,
                         int(per_slice.sum()), int(replaced.sum()), float(factor),
                         image[neighbour_index(case.z, context)[keep]] if context else None)


def healthy_brain(G, S, cases: list[CachedCase], threshold: float = 0.5, batch: int = 16,
                  normalisation: str | None = None) -> dict:
    """The model on nearly healthy brains (`mirrored_healthy` of each case, no mask given): the
    share of measured brain voxels S calls lesion (p > `threshold`), and how much the
    pseudo-normal (G inside the brain) changes that healthy tissue: the share of voxels with
    |G(I) - I| > HEALTHY_CHANGE and the mean |G(I) - I|. Per case, and pooled: voxel-pooled
    changes, and the lesion share's mean over cases and its worst case. `normalisation`: the
    model's, to scale each healthy volume as synthesis would (mirrored_healthy)."""
    per_case, tot = {}, np.zeros(4)  # measured voxels, lesion calls, changed voxels, sum |G(I) - I|
    for case in cases:
        mb = mirrored_healthy(case, normalisation=normalisation, context=context_of(G))
        entry = {"slices": int(len(mb.slices)), "abnormal_slices": int(case.abnormal.sum()),
                 "rescaled_by": mb.rescaled_by,
                 "lesion_replaced": mb.replaced_voxels / mb.lesion_voxels if mb.lesion_voxels else float("nan")}
        if len(mb.slices):
            p = torch.softmax(torch.from_numpy(run_net(S, mb.image, batch)), dim=1)[:, 1].numpy()
            X = mb.image if mb.context is None else mb.context
            change = np.abs(pseudo_normal(G, X, batch, S) - mb.image)[mb.measured]
            counts = np.array([mb.measured.sum(), (p > threshold)[mb.measured].sum(),
                               (change > HEALTHY_CHANGE).sum(), change.sum()], np.float64)
            tot += counts
            entry.update(lesion_share=counts[1] / counts[0], changed_share=counts[2] / counts[0],
                         mean_abs_change=counts[3] / counts[0])
        per_case[case.case_id] = entry
    shares = [e["lesion_share"] for e in per_case.values() if "lesion_share" in e]
    nan = float("nan")
    pooled = {"slices": sum(e["slices"] for e in per_case.values()),
              "lesion_share_mean": float(np.mean(shares)) if shares else nan,
              "lesion_share_worst": float(np.max(shares)) if shares else nan,
              "changed_share": tot[2] / tot[0] if tot[0] else nan,
              "mean_abs_change": tot[3] / tot[0] if tot[0] else nan}
    return {"pooled": {k: v if k == "slices" else float(v) for k, v in pooled.items()},
            "per_case": {c: {k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in e.items()}
                         for c, e in per_case.items()}}


# ---- evaluation --------------------------------------------------------------------------
def segment_cases(net, cases: list[CachedCase], batch: int = 16) -> dict[str, np.ndarray]:
    """A segmentor's lesion mask (argmax: p > 0.5) on every kept slice of each case."""
    return {case.case_id: run_net(net, np.asarray(case.image, np.float32), batch).argmax(1) > 0 for case in cases}


def segmentation_dice(net, cases: list[CachedCase], batch: int = 16,
                      preds: dict | None = None) -> tuple[float, dict[str, float]]:
    """Whole-tumour Dice of a segmentor over every kept slice of each case: pooled over all
    voxels of all cases, and per case. `preds`: `segment_cases`' masks, when already made."""
    preds = segment_cases(net, cases, batch) if preds is None else preds
    per_case, inter, total = {}, 0.0, 0.0
    for case in cases:
        truth, pred = np.asarray(case.mask) > 0, preds[case.case_id]
        per_case[case.case_id] = metrics.dice(pred, truth)
        inter += np.logical_and(pred, truth).sum()
        total += pred.sum() + truth.sum()
    return (float(2 * inter / total) if total else 1.0), per_case


def evaluate(model: SmileModel, test_cases: list[CachedCase], spred: Segmentor, transplants: TransplantSet | None,
             batch: int = 16) -> dict:
    G, S = model.nets["G"].eval(), model.nets["S"].eval()
    spred = spred.eval()
    preds = segment_cases(S, test_cases, batch)
    dice_all, per_case = segmentation_dice(S, test_cases, batch, preds)
    ids, n_pn, n_in, ids_fill, n_fill = [], 0.0, 0.0, [], 0.0
    per_case_ih = {}  # case -> identity and healthiness over its abnormal slices
    outside = {}      # case -> [changed, all] brain voxels away from the expert lesion
    stripes = {k: [0.0, 0] for k in ("pseudo_normal_lesion", "input_lesion", "input_healthy", "pseudo_normal_healthy")}
    for case in test_cases:
        images = np.asarray(case.image, np.float32)
        truth = np.asarray(case.mask) > 0
        X = G_input(G, images, case.z)
        G_all = run_net(G, X, batch, preds[case.case_id] if isinstance(G, GatedGenerator) else None)[:, 0]  # as synthesis
        pn_all = np.where(images > 0, G_all, images)
        near = grow(torch.from_numpy(truth)[:, None], 5)[:, 0].numpy() > 0
        healthy = (images > 0) & ~near
        away = (images > 0) & ~(grow(torch.from_numpy(truth)[:, None], OUTSIDE_GROW)[:, 0].numpy() > 0)
        outside[case.case_id] = [int((np.abs(pn_all - images)[away] > HEALTHY_CHANGE).sum()), int(away.sum())]
        neighbours = np.diff(case.z) == 1
        for key, stack, region in (("pseudo_normal_lesion", pn_all, truth), ("input_lesion", images, truth),
                                   ("input_healthy", images, healthy), ("pseudo_normal_healthy", pn_all, healthy)):
            value, n = metrics.through_plane_change(stack, region, neighbours)
            if n:
                stripes[key][0] += value * n
                stripes[key][1] += n
        ab = case.abnormal
        if ab.any():
            I, M = images[ab], truth[ab].astype(np.float32)
            G_I = G_all[ab]
            ids.append(metrics.identity(G_I, I, M).numpy())
            case_pn = float((run_net(spred, G_I, batch).argmax(1) > 0).sum())
            case_in = float((run_net(spred, I, batch).argmax(1) > 0).sum())
            n_pn, n_in = n_pn + case_pn, n_in + case_in
            per_case_ih[case.case_id] = {"identity": float(ids[-1].mean()),
                                         "healthiness": metrics.healthiness(case_pn, case_in)}
            G_F = pseudo_normal_S_mask_fill(G, S, X[ab], batch)
            ids_fill.append(metrics.identity(G_F, I, M).numpy())
            n_fill += float((run_net(spred, G_F, batch).argmax(1) > 0).sum())
    report = {"identity": float(np.concatenate(ids).mean()) if ids else float("nan"),
              "healthiness": metrics.healthiness(n_pn, n_in),
              "S_mask_fill": {"identity": float(np.concatenate(ids_fill).mean()) if ids_fill else float("nan"),
                              "healthiness": metrics.healthiness(n_fill, n_in)},
              "dice_S": dice_all, "dice_S_per_case": per_case, "per_case": per_case_ih,
              "abnormal_slices": int(sum(len(i) for i in ids)),
              "through_plane_change": {k: (v / n if n else float("nan")) for k, (v, n) in stripes.items()},
              "outside_lesion_changed": {"per_case": {c: k / max(n, 1) for c, (k, n) in outside.items()},
                                         "pooled": sum(k for k, _ in outside.values())
                                         / max(sum(n for _, n in outside.values()), 1),
                                         "grow": OUTSIDE_GROW, "limit": HEALTHY_CHANGE}}
    if transplants is not None:
        report.update(_known_truth(G, S, transplants, batch))
    report.update(_through_plane_against_truth(G, S, test_cases, batch))
    report["normal_anatomy_called_lesion"] = metrics.normal_anatomy_called_lesion(
        {c.case_id: (np.asarray(c.image, np.float32), np.asarray(c.mask) > 0) for c in test_cases}, preds,
        lambda images: run_net(S, images, batch).argmax(1) > 0, mirror_axis)
    report["healthy_brain"] = healthy_brain(G, S, test_cases, float(model.config.get("lesion_threshold", 0.5)), batch,
                                            normalisation=model.normalisation)
    return report


def through_synthesis(model: SmileModel, cases: list, modality: str, progress=None) -> dict:
    """`synthesize` on each case's image file (cases.Case, labelled), no mask: per case the segmentor
    that ran, the Dice of its lesion mask (every slice) and the share of far brain changed; pooled Dice
    over all voxels."""
    from scipy import ndimage

    from .synthesis import synthesize
    from .volume import load_label, load_nifti
    per_case, inter, total = {}, 0.0, 0.0
    if progress:   # the bar from the start: one case is a synthesis of many seconds
        progress(0, len(cases))
    for i, case in enumerate(cases):
        data, affine, _ = load_nifti(case.image(modality))
        truth = load_label(case.seg, data.shape, affine)
        result = synthesize(data, affine, model, notify=lambda message: None)
        pred = result.lesion_mask > 0
        brain = data > 0
        far = brain & (ndimage.distance_transform_edt(~truth) > OUTSIDE_GROW)
        changed = (np.abs(result.pseudo_normal - data) > 0.01 * np.percentile(data[brain], 99.5)) & far
        per_case[case.case_id] = {"segmentor": result.segmentor, "dice": metrics.dice(pred, truth),
                                  "far_changed": float(changed.sum() / max(far.sum(), 1))}
        inter, total = inter + float((pred & truth).sum()), total + float(pred.sum() + truth.sum())
        if progress:
            progress(i + 1, len(cases))
    return {"per_case": per_case, "dice": 2 * inter / total if total else 1.0, "far_grow": OUTSIDE_GROW}


def _known_truth(G, S, transplants: TransplantSet, batch: int) -> dict:
    """Errors inside the transplanted lesions (known_truth.py) of the model's outputs and of the
    references, pooled and per host case."""
    image, lesion = transplants.image, transplants.lesion
    X, MX = transplants.G_input(context_of(G))
    pn = pseudo_normal(G, X, batch, S)
    outputs = (("model", pn), ("model_mask_given", pseudo_normal_mask_given(G, X, MX, batch)),
               ("model_mask_given_no_fill", np.where(lesion, pn, image)),  # lesion_fill "none"
               ("model_S_mask_fill", pseudo_normal_S_mask_fill(G, S, X, batch)),
               ("untouched", image),
               ("mean_fill", mean_fill(image, lesion)),
               ("smooth_fill", fill_lesion_array(image, lesion, 0)),
               ("best_constant", best_constant(image, transplants.truth, lesion)))
    report = {"known_truth": {name: metrics.known_truth_errors(img, transplants.truth, lesion)
                              for name, img in outputs},
              "known_truth_slices": len(transplants.image)}
    hosts = np.array([host for host, _, _, _ in transplants.source])
    report["known_truth_per_case"] = {
        host: {"transplants": int((hosts == host).sum()),
               "same_case": sum(h == host and d == host for h, _, d, _ in transplants.source),
               "donor_cases": sorted({d for h, _, d, _ in transplants.source if h == host}),
               **{name: metrics.known_truth_errors(img[hosts == host], transplants.truth[hosts == host],
                                                   lesion[hosts == host]) for name, img in outputs}}
        for host in sorted(set(hosts.tolist()))}
    return report


def _through_plane_against_truth(G, S, test_cases: list[CachedCase], batch: int) -> dict:
    """Striping against known truth: the through-plane change inside lesion volumes pasted into
    adjacent normal slices (`transplant_slabs`), pooled over the slabs; {} when the test cases
    have no such slices."""
    for length in (8, 4, 2):  # shorter slabs for small test volumes
        try:
            slabs = transplant_slabs(test_cases, length=length, min_lesion=20)
            break
        except ValueError:
            continue
    else:
        return {}
    totals = {name: [0.0, 0] for name in ("truth", "input", "model", "model_mask_given", "mean_fill")}
    for image, truth, lesion in zip(slabs.image, slabs.truth, slabs.lesion):
        z = np.arange(len(image))   # a slab's slices are adjacent; its end slices see themselves repeated
        X, MX = G_input(G, image, z), G_input(G, lesion, z)
        for name, stack in (("truth", truth), ("input", image), ("model", pseudo_normal(G, X, batch, S)),
                            ("model_mask_given", pseudo_normal_mask_given(G, X, MX, batch)),
                            ("mean_fill", mean_fill(image, lesion))):
            value, n = metrics.through_plane_change(stack, lesion)
            if n:
                totals[name][0] += value * n
                totals[name][1] += n
    return {"known_truth_through_plane": {k: (v / n if n else float("nan")) for k, (v, n) in totals.items()},
            "known_truth_slabs": [list(x) for x in slabs.source]}
