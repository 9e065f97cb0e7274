"""SMILE's loss terms, written as the paper writes them (DESIGN.md section 1).

Notation: I image, M lesion mask (1 lesion, 0 elsewhere; shape N x H x W, integer), 0 the
all-zero mask, G/S/R the networks, Pab = R(G(I), M) the pseudo-abnormal image.
Each function returns a dict of named terms so that every term can be logged; the loss a
network minimises is the sum of its dict.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def L_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a.float(), b.float())


def L_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target)


def zeros_like_mask(M: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(M)


def generator_terms(I, M, G_I, S_G_I) -> dict[str, torch.Tensor]:
    """L_gen = L_mse((1-M)*I, (1-M)*G(I)) + L_ce(S(G(I)), 0).
    On normal slices M = 0, so the first term asks G to return I unchanged."""
    keep = 1 - M[:, None].to(I.dtype)
    return {"gen_identity": L_mse(keep * I, keep * G_I),
            "gen_adv": L_ce(S_G_I, zeros_like_mask(M))}


def segmentor_terms(M, S_G_I, S_Pab=None, S_I=None, labeled=None) -> dict[str, torch.Tensor]:
    """L_seg = L_ce(S(G(I)), M) + L_ce(S(Pab), M), plus L_ce(S(I), M) on real labelled slices.
    The Pab term is left out while R is not trained yet (phase 1)."""
    terms = {"seg_pn": L_ce(S_G_I, M)}
    if S_Pab is not None:
        terms["seg_pab"] = L_ce(S_Pab, M)
    if S_I is not None and labeled is not None and labeled.any():
        terms["seg_real"] = L_ce(S_I[labeled], M[labeled])
    return terms


def reconstructor_terms(I, Pab, M=None, S_Pab=None) -> dict[str, torch.Tensor]:
    """L_recons = L_mse(Pab, I); in R's adversarial phases R also wants S to see a lesion at M
    in Pab: L_ce(S(Pab), M)."""
    terms = {"recons": L_mse(Pab, I)}
    if S_Pab is not None:
        terms["recons_adv"] = L_ce(S_Pab, M)
    return terms


def confidence_enhancer(S_U: torch.Tensor, eps: float, brain: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-label PL = 1 where S's lesion probability p > eps, else 0, and
    L_semi = L_ce(S(U), PL). Returns (PL, L_semi). With `brain` given, PL is also 0 outside
    the brain (background is never lesion; an untrained S would otherwise label it)."""
    p = torch.softmax(S_U.float(), dim=1)[:, 1]
    PL = (p > eps).long()
    if brain is not None:
        PL = PL * brain.long()
    return PL, L_ce(S_U, PL)


def transplant_lesions(healthy: torch.Tensor, donor: torch.Tensor, donor_mask: torch.Tensor) -> torch.Tensor:
    """Paste the donor's lesion (its pixels under `donor_mask`, N x H x W, or N x C x H x W for
    slices with their neighbours) into healthy slices, inside their brain only. Returns the
    slices with lesions; `healthy` is their known truth."""
    m = ((donor_mask[:, None] if donor_mask.dim() == 3 else donor_mask) > 0) & (healthy > 0)
    return torch.where(m, donor, healthy)


def transplant_pairs(I: torch.Tensor, M: torch.Tensor, labeled: torch.Tensor, centre: int = 0):
    """(slices with transplanted lesions, their healthy truth, where the lesion was pasted) from
    one batch: each labelled normal slice receives the lesion of a labelled abnormal slice (taken
    in turn); None when the batch lacks either kind. With neighbouring slices (I and M: N x C x H x W,
    the slice itself in channel `centre`) the donor's lesion volume is pasted into the host's
    neighbours too; the truth and the pasted mask are the centre slice's (N x 1 x H x W)."""
    M = M[:, None] if M.dim() == 3 else M
    has_lesion = M[:, centre].flatten(1).any(1)
    normal = torch.nonzero(labeled & ~has_lesion).flatten()
    donors = torch.nonzero(labeled & has_lesion).flatten()
    if len(normal) == 0 or len(donors) == 0:
        return None
    pick = donors[torch.arange(len(normal), device=I.device) % len(donors)]
    healthy = I[normal]
    truth = healthy[:, centre:centre + 1]
    return (transplant_lesions(healthy, I[pick], M[pick]), truth,
            (M[pick][:, centre:centre + 1] > 0) & (truth > 0))


def L_mse_inside(x: torch.Tensor, y: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels of `region` only (0 when it is empty)."""
    region = region.to(x.dtype)
    return (((x - y) ** 2) * region).sum() / region.sum().clamp(min=1)


def L_gate_dice(logits: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice of the gate (sigmoid of its logits) with a lesion, per slice, averaged over
    the slices (N x 1 x H x W; a slice whose pasted lesion fell outside the brain asks for a shut
    gate): a lesion of 100 voxels counts as much as one of 3000, where L_gate, averaged over the
    brain, barely notices the small one missed."""
    p, r = torch.sigmoid(logits.float()).flatten(1), region.float().flatten(1)
    return 1 - ((2 * (p * r).sum(1) + 1) / (p.sum(1) + r.sum(1) + 1)).mean()


def L_gate(logits: torch.Tensor, region: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """The gated G's where-to-change map against where the lesion is (N x 1 x H x W): binary
    cross-entropy averaged over the brain (the background is trivially shut). Not class-balanced:
    balancing shifts the prior, so healthy tissue would get gate values near the floor of
    confidence instead of near 0 (measured: a balanced gate opened on 80 % of a healthy brain)."""
    brain = brain.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), region.float() * brain, reduction="none")
    return (bce * brain).sum() / brain.sum().clamp(min=1)
