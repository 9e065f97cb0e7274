"""The known-truth set: real lesions pasted into normal slices of other (or the same) cases,
so that the healthy tissue under each lesion is known, and the reference fills an output is
measured against (evaluate.py measures the errors inside the pasted lesion).

- `transplant_set`: lesion slices pasted into normal slices of host cases, the lesion's shape
  from the donor's label and its intensities from the donor's image, kept where the host has
  brain (all cases are co-registered BraTS volumes); for a 2.5D G, as lesion volumes (the donor's
  neighbouring lesion slices pasted into the host's, `TransplantSet.G_input`).
- `transplant_slabs`: lesion volumes (`length` adjacent slices) pasted into adjacent normal
  slices, for striping against known truth.
- References: `mean_fill` (the plain baseline) and `best_constant` (a ceiling for flat fills;
  it uses the truth).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .dataset import CachedCase
from .gated import neighbour_index
from .lesionfill import grow


@dataclass
class TransplantSet:
    image: np.ndarray    # N x H x W, normal slice with a pasted lesion
    truth: np.ndarray    # N x H x W, the normal slice
    lesion: np.ndarray   # N x H x W bool, where the lesion was pasted (inside the brain)
    source: list[tuple[str, int, str, int]]  # (recipient case, slice, donor case, slice)
    context: np.ndarray | None = None         # N x (2k+1) x H x W: the host's neighbouring slices too,
    context_lesion: np.ndarray | None = None  # with the donor's neighbouring lesion slices pasted

    def G_input(self, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(slices with their k neighbours on each side, their pasted lesions), N x (2k+1) x H x W:
        what a G that sees k neighbouring slices gets (gated.context_of)."""
        built = 0 if self.context is None else self.context.shape[1] // 2
        if k > built:
            raise ValueError(f"the known-truth set holds {built} neighbouring slices on each side; G sees {k}")
        if self.context is None:
            return self.image[:, None], self.lesion[:, None]
        return self.context[:, built - k:built + k + 1], self.context_lesion[:, built - k:built + k + 1]


PAIRINGS = ("other", "same", "both")


def transplant_set(cases: list[CachedCase], n: int = 32, seed: int = 0, min_lesion: int = 50,
                   donors: list[CachedCase] | None = None, pairing: str = "other", context: int = 0) -> TransplantSet:
    """Real lesions (shape from the label, intensities from the image) of abnormal slices pasted
    into normal slices of the host `cases`, at the same in-plane position (all cases are
    co-registered BraTS volumes), kept where the host has brain. Seeded, so the set is fixed.

    `donors` (default: the hosts themselves) are the cases lesions come from; they may include
    the model's training cases: the lesion's shape and intensities are then the donor's, but the
    healthy truth the error is measured against is always the host's, a slice the model has not
    been trained on when the host is a test or validation case. `pairing`: "other" takes a lesion
    of a case other than the host (falls back to the host's own lesions when the donors hold
    lesions of one case only; `source` shows it), "same" only the host's own, "both" either.
    The host slice is drawn uniformly among all normal slices of the hosts, so a host with more
    normal slices gets more transplants.

    `context` k > 0 (a 2.5D G): the lesion is pasted as a volume, the donor's k slices on each
    side into the host's (gated.neighbour_index), kept in `context`; the centre slices, and so
    the figures of a 2D model, are those of `context` 0."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}")
    rng = np.random.default_rng(seed)
    donors = cases if donors is None else donors
    normal = [(c, si) for c in cases if c.labeled for si in np.nonzero(~c.abnormal)[0]]
    abnormal = [(c, si) for c in donors if c.labeled for si in np.nonzero(c.abnormal)[0]]
    if pairing == "same":
        hosts = {c.case_id for c, _ in normal}
        abnormal = [(c, si) for c, si in abnormal if c.case_id in hosts]
    if not normal or not abnormal:
        raise ValueError("a transplant set needs labelled cases with both normal and abnormal slices")
    other_exists = len({c.case_id for c, _ in abnormal}) > 1
    images, truths, lesions, source, contexts, context_lesions = [], [], [], [], [], []
    rows = {}  # case -> neighbour_index of its kept slices
    tries = 0
    while len(images) < n and tries < 50 * n:
        tries += 1
        (r, rsi), (d, dsi) = normal[rng.integers(len(normal))], abnormal[rng.integers(len(abnormal))]
        same = d.case_id == r.case_id
        if (pairing == "other" and same and other_exists) or (pairing == "same" and not same):
            continue
        healthy = np.asarray(r.image[rsi], np.float32)
        donor = np.asarray(d.image[dsi], np.float32)
        if healthy.shape != donor.shape:
            continue
        lesion = (np.asarray(d.mask[dsi]) > 0) & (healthy > 0)
        if lesion.sum() < min_lesion:
            continue
        images.append(np.where(lesion, donor, healthy))
        truths.append(healthy)
        lesions.append(lesion)
        source.append((r.case_id, int(r.z[rsi]), d.case_id, int(d.z[dsi])))
        if context:
            for c in (r, d):
                rows.setdefault(c.case_id, neighbour_index(c.z, context))
            host = np.asarray(r.image[rows[r.case_id][rsi]], np.float32)
            volume = (np.asarray(d.mask[rows[d.case_id][dsi]]) > 0) & (host > 0)
            contexts.append(np.where(volume, np.asarray(d.image[rows[d.case_id][dsi]], np.float32), host))
            context_lesions.append(volume)
    if not images:
        raise ValueError("no lesion could be transplanted (lesions too small or no matching slices)")
    return TransplantSet(np.stack(images), np.stack(truths), np.stack(lesions), source,
                         np.stack(contexts) if context else None, np.stack(context_lesions) if context else None)


def _runs(case: CachedCase, abnormal: bool, length: int) -> list[int]:
    """Start indices of `length` kept slices in a row, adjacent in the volume, all abnormal or all normal."""
    ok = case.abnormal if abnormal else ~case.abnormal
    adjacent = np.diff(case.z) == 1
    return [i for i in range(len(case.z) - length + 1)
            if ok[i:i + length].all() and adjacent[i:i + length - 1].all()]


def transplant_slabs(cases: list[CachedCase], n: int = 4, length: int = 8, seed: int = 0,
                     min_lesion: int = 50) -> TransplantSet:
    """The 3D version of `transplant_set`, for striping against known truth: `length` adjacent
    abnormal slices of a donor pasted into `length` adjacent normal slices of a recipient (the
    lesion volume keeps its through-plane shape). Arrays are n x length x H x W."""
    rng = np.random.default_rng(seed)
    labeled = [c for c in cases if c.labeled]
    recipients = [(c, i) for c in labeled for i in _runs(c, False, length)]
    donors = [(c, i) for c in labeled for i in _runs(c, True, length)]
    if not recipients or not donors:
        raise ValueError(f"no {length} adjacent normal and abnormal slices to build lesion slabs from")
    images, truths, lesions, source = [], [], [], []
    for _ in range(50 * n):
        if len(images) == n:
            break
        (r, ri), (d, di) = recipients[rng.integers(len(recipients))], donors[rng.integers(len(donors))]
        healthy = np.asarray(r.image[ri:ri + length], np.float32)
        donor = np.asarray(d.image[di:di + length], np.float32)
        if healthy.shape != donor.shape:
            continue
        lesion = (np.asarray(d.mask[di:di + length]) > 0) & (healthy > 0)
        if lesion.sum() < min_lesion * length:
            continue
        images.append(np.where(lesion, donor, healthy))
        truths.append(healthy)
        lesions.append(lesion)
        source.append((r.case_id, int(r.z[ri]), d.case_id, int(d.z[di])))
    if not images:
        raise ValueError("no lesion slab could be transplanted (lesions too small)")
    return TransplantSet(np.stack(images), np.stack(truths), np.stack(lesions), source)


def best_constant(image: np.ndarray, truth: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """A ceiling, not a method: each lesion filled with the mean of its own healthy truth, the
    best any single value per lesion can do (no fill that is flat inside the lesion beats it)."""
    out = image.copy()
    for k in range(len(image)):
        if lesion[k].any():
            out[k][lesion[k]] = truth[k][lesion[k]].mean()
    return out


def mean_fill(image: np.ndarray, lesion: np.ndarray, ring: int = 5) -> np.ndarray:
    """The plain baseline: each lesion filled with the mean of the brain tissue in a ring of
    `ring` pixels around it."""
    out = image.copy()
    for k in range(len(image)):
        m = torch.from_numpy(lesion[k].astype(np.float32))[None, None]
        grown = grow(m, ring)[0, 0].numpy() > 0
        around = grown & ~lesion[k] & (image[k] > 0)
        out[k][lesion[k]] = image[k][around].mean() if around.any() else image[k][image[k] > 0].mean()
    return out


def ring_mean_fill(image: np.ndarray, mask: np.ndarray, ring: int = 5) -> np.ndarray:
    """Each axial slice's part of the mask filled with the mean of the brain in a ring of `ring`
    pixels around it (mean_fill), X x Y x Z."""
    out = np.array(image, np.float32, copy=True)
    zs = np.nonzero(np.asarray(mask).any(axis=(0, 1)))[0]
    axial = lambda v: np.ascontiguousarray(np.moveaxis(np.asarray(v)[:, :, zs], 2, 0))  # noqa: E731
    out[:, :, zs] = np.moveaxis(mean_fill(axial(out), axial(mask).astype(bool), ring), 0, 2)
    return out
