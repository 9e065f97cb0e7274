"""The paper's four training phases (DESIGN.md section 1): one function each, beside its equations.

Notation as in losses.py: I the slice, M its lesion mask (the label, or the pseudo-label PL of an
unlabelled slice), 0 the all-zero mask, G/S/R the networks, Pn = G(I), Pab = R(G(I), M).

    phase 1  G and S adversarially          S: L_seg (Pn, real)   G: L_gen
    phase 2  R alone, G and S frozen                              R: L_recons
    phase 3  R and S adversarially          S: L_seg (Pn, Pab)    R: L_recons + L_ce(S(Pab), M)
    phase 4  G, S and R fine-tuned together S: L_seg (Pn, Pab)    G, R: L_gen + L_recons + L_ce(S(Pab), M)

Within a step S is updated first (segmentor_step; it also yields the pseudo-labels of the
unlabelled slices, which then serve as M for G and R), then G and/or R against the just-updated
S, frozen. G's output is detached before R sees it, so R's reconstruction never pulls G towards
keeping the lesion. Where S is not trained (phase 2, or `freeze` S) the pseudo-labels come without
an update of S (pseudo_labels).

Confidence enhancer: for unlabelled slices, PL = [p > eps] with p = S's lesion probability,
L_semi = L_ce(S(U), PL), and U is then used like a labelled slice with M := PL. eps starts at
0.9; after every epoch it becomes the average confidence seen, which we define as the mean
lesion probability over the brain pixels of unlabelled slices that S called lesion (p > 0.5), kept
within [0.5, 0.99] (an epoch with no such pixel leaves eps unchanged): next_eps.

Beyond the paper (off by default, `transplant_weight` > 0): a paired lesion-removal term for
G. Real lesions of the batch's abnormal labelled slices are pasted into its normal slices,
whose healthy image is then known, and G is asked to return it:
L_transplant = L_mse(G(I_n with lesion), I_n). DESIGN.md explains why the paper's terms alone
let G darken a tumour instead of removing it. The lesion is a few percent of a slice, so the
whole-slice error mostly asks G to leave healthy tissue alone; `transplant_lesion_weight` adds
the error inside the pasted lesion alone, w * mean over those pixels of (G - I_n)^2, which is
what the known-truth PSNR measures. With the gated generator (`generator="gated"`, gated.py) the
same pairs also supervise its gate A with the pasted mask, the batch's masks M supervise it on
the real slices (losses.L_gate), and S's adversarial term reaches the gate only, not C.

2.5D (`context_slices` k, gated G only): batches hold each slice with its k neighbours on each side
(dataset.SliceSet); G gets them all, S, R and the losses the slice itself; the transplant term
pastes the donor's lesion volume into the host's neighbours too.

The functions here compute and apply losses only; the trainer (train.py) supplies the batch on
its device, autocast, the optimiser update and the confidence record through a `Step`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from . import losses as L


@dataclass
class Step:
    """One training step: the networks, one batch on the device, and what the trainer provides."""
    G: torch.nn.Module
    S: torch.nn.Module
    R: torch.nn.Module
    cfg: object              # train.TrainConfig
    X: torch.Tensor          # the slices with their neighbours (G's input), N x (2k+1) x H x W
    I: torch.Tensor          # the slices themselves, N x 1 x H x W
    M_true: torch.Tensor     # their labels, N x H x W (all 0 on unlabelled slices)
    MX: torch.Tensor         # the labels of the slices and their neighbours, N x (2k+1) x H x W
    labeled: torch.Tensor    # N booleans
    eps: float               # the confidence enhancer's threshold this epoch
    acc: dict                # the confidence record of this epoch (new_confidence_record), updated here
    autocast: Callable       # () -> the autocast context of the run
    update: Callable         # (names, terms): one optimiser step of the networks named, on the terms' sum


@contextlib.contextmanager
def frozen(*nets):
    """Parameters of `nets` need no gradient inside the block (they act as fixed functions)."""
    saved = [[p.requires_grad for p in n.parameters()] for n in nets]
    for n in nets:
        n.requires_grad_(False)
    try:
        yield
    finally:
        for n, flags in zip(nets, saved):
            for p, f in zip(n.parameters(), flags):
                p.requires_grad_(f)


# ---- the confidence enhancer -------------------------------------------------------------
def confidence_enhancer(s: Step, M, S_U, I_U, unlabeled) -> torch.Tensor:
    """PL = 1 where p = S(U)'s lesion probability > eps (inside the brain), else 0;
    L_semi = L_ce(S(U), PL); then M := PL on the unlabelled slices U (M is changed in place).
    Returns L_semi."""
    PL, L_semi = L.confidence_enhancer(S_U, s.eps, I_U[:, 0] > 0)
    M[unlabeled] = PL
    track_confidence(s.acc, S_U.detach(), PL, I_U)
    return L_semi


def new_confidence_record() -> dict:
    return {"conf_sum": 0.0, "conf_count": 0, "pl_pixels": 0, "brain_pixels": 0, "slices": 0}


def track_confidence(acc: dict, S_U, PL, I_U):
    """Adds S's lesion calls (p > 0.5) inside the brain of unlabelled slices to the epoch's record."""
    p = torch.softmax(S_U.float(), dim=1)[:, 1]
    confident = (p > 0.5) & (I_U[:, 0] > 0)  # lesion calls inside the brain
    acc["conf_sum"] += float(p[confident].sum())
    acc["conf_count"] += int(confident.sum())
    acc["pl_pixels"] += int(PL.sum())
    acc["brain_pixels"] += int((I_U[:, 0] > 0).sum())


def pseudo_label_share(acc: dict) -> float:
    """The share of the unlabelled slices' brain pixels that the epoch's pseudo-labels call lesion."""
    return acc["pl_pixels"] / max(acc["brain_pixels"], 1)


def next_eps(eps: float, acc: dict) -> float:
    """eps after an epoch: the average confidence seen (mean p of the lesion calls), in [0.5, 0.99]."""
    if acc["conf_count"] > 0:
        return float(min(max(acc["conf_sum"] / acc["conf_count"], 0.5), 0.99))
    return eps


# ---- the segmentor -----------------------------------------------------------------------
def segmentor_step(s: Step, with_pab: bool):
    """S's update: L_seg = L_ce(S(G(I)), M) + L_ce(S(Pab), M), plus L_ce(S(I), M) on labelled
    slices and L_semi on unlabelled ones (whose M becomes PL). The Pab term (`with_pab`) once R
    is trained (phases 3, 4). Returns M and the terms."""
    unlabeled = ~s.labeled
    with s.autocast():
        with torch.no_grad():
            G_I = s.G(s.X)
        S_I = s.S(s.I)
        M = s.M_true.clone()
        terms = {}
        if unlabeled.any():
            terms["semi"] = confidence_enhancer(s, M, S_I[unlabeled], s.I[unlabeled], unlabeled)
        Pab = None
        if with_pab:
            with torch.no_grad():
                Pab = s.R(G_I, M[:, None].to(G_I.dtype))
        terms.update(L.segmentor_terms(M, s.S(G_I), s.S(Pab) if Pab is not None else None, S_I, s.labeled))
    s.update("S", terms)
    return M, terms


def pseudo_labels(s: Step):
    """M without an update of S (S frozen): the labels, and PL on unlabelled slices."""
    M = s.M_true.clone()
    unlabeled = ~s.labeled
    if unlabeled.any():
        with torch.no_grad(), s.autocast():
            S_U = s.S(s.I[unlabeled])
        confidence_enhancer(s, M, S_U, s.I[unlabeled], unlabeled)
    return M


def masks_after_segmentor_step(s: Step, with_pab: bool):
    """segmentor_step, or pseudo_labels alone where S is kept as it started (`freeze` S)."""
    if "S" in s.cfg.freeze:
        return pseudo_labels(s), {}
    return segmentor_step(s, with_pab)


# ---- the generator and the reconstructor -------------------------------------------------
def generator_loss(s: Step, M, Mf):
    """L_gen = L_mse((1-M) I, (1-M) G(I)) + L_ce(S(G(I)), 0); a gated G also has its gate A taught
    by M (L_gate), and S's verdict reaches A only. Plus the transplant terms. Returns the terms
    and G(I), detached."""
    G, S, I = s.G, s.S, s.I
    terms = {}
    if hasattr(G, "parts"):  # the gated G: where to change is taught by the masks (real and pasted)
        logits, A, C = G.parts(s.X)
        G_I = G.compose(I, A, C)
        terms["gen_gate"] = s.cfg.gate_weight * L.L_gate(logits, Mf > 0, I > 0)
        # S's verdict moves the gate only: what to put in comes from the known truth
        # (transplant terms); through C it darkened lesions into patches S ignores
        S_G_I = S(G.compose(I, A, C.detach()))
    else:
        G_I = G(s.X)
        S_G_I = S(G_I)
    terms.update(L.generator_terms(I, M, G_I, S_G_I))
    if s.cfg.transplant_weight > 0:
        terms.update(transplant_loss(s))
    return terms, G_I.detach()


def transplant_loss(s: Step) -> dict:
    """Beyond the paper: L_transplant = w L_mse(G(I_n with lesion), I_n) on the batch's normal
    slices given its abnormal slices' lesions, + w_lesion L_mse inside the pasted lesion; a gated
    G's gate also learns the pasted mask (L_gate, and optionally its soft Dice)."""
    pair = L.transplant_pairs(s.X, s.MX, s.labeled, s.cfg.context_slices)
    if pair is None:
        return {}
    X_t, truth, pasted = pair
    G, cfg, terms = s.G, s.cfg, {}
    if hasattr(G, "parts"):  # the pasted mask also teaches its gate
        I_t = G.centre(X_t)
        logits, A, C = G.parts(X_t)
        G_t = G.compose(I_t, A, C)
        terms["transplant_gate"] = cfg.transplant_weight * L.L_gate(logits, pasted, I_t > 0)
        if cfg.gate_dice_weight > 0:
            terms["transplant_gate_dice"] = cfg.gate_dice_weight * L.L_gate_dice(logits, pasted)
    else:
        G_t = G(X_t)
    terms["transplant"] = cfg.transplant_weight * L.L_mse(G_t, truth)
    if cfg.transplant_lesion_weight > 0:
        terms["transplant_lesion"] = cfg.transplant_lesion_weight * L.L_mse_inside(G_t, truth, pasted)
    return terms


def reconstructor_loss(s: Step, G_I, M, Mf, adversarial: bool) -> dict:
    """Pab = R(G(I), M), L_recons = L_mse(Pab, I); `adversarial` (phases 3, 4): + L_ce(S(Pab), M)."""
    Pab = s.R(G_I, Mf)
    return L.reconstructor_terms(s.I, Pab, M, s.S(Pab) if adversarial else None)


# ---- the four phases ---------------------------------------------------------------------
def phase1_generator_vs_segmentor(s: Step) -> dict:
    """Phase 1, G and S adversarially (GVS is this phase alone).
    S: L_seg = L_ce(S(G(I)), M) + L_ce(S(I), M) [+ L_semi];
    G: L_gen = L_mse((1-M) I, (1-M) G(I)) + L_ce(S(G(I)), 0)."""
    M, logged = masks_after_segmentor_step(s, with_pab=False)
    Mf = M[:, None].to(s.I.dtype)
    with frozen(s.S), s.autocast():
        terms, _ = generator_loss(s, M, Mf)
    s.update("G", terms)
    return {**logged, **terms}


def phase2_reconstructor(s: Step) -> dict:
    """Phase 2, R alone (G and S frozen): Pab = R(G(I), M), L_recons = L_mse(Pab, I)."""
    M = pseudo_labels(s)
    Mf = M[:, None].to(s.I.dtype)
    with frozen(s.S), s.autocast():
        with torch.no_grad():
            G_I = s.G(s.X)
        terms = reconstructor_loss(s, G_I, M, Mf, adversarial=False)
    s.update("R", terms)
    return terms


def phase3_reconstructor_vs_segmentor(s: Step) -> dict:
    """Phase 3, R and S adversarially.
    S: L_seg = L_ce(S(G(I)), M) + L_ce(S(Pab), M) + L_ce(S(I), M) [+ L_semi];
    R: L_recons = L_mse(Pab, I) + L_ce(S(Pab), M)."""
    M, logged = masks_after_segmentor_step(s, with_pab=True)
    Mf = M[:, None].to(s.I.dtype)
    with frozen(s.S), s.autocast():
        with torch.no_grad():
            G_I = s.G(s.X)
        terms = reconstructor_loss(s, G_I, M, Mf, adversarial=True)
    s.update("R", terms)
    return {**logged, **terms}


def phase4_joint_finetune(s: Step) -> dict:
    """Phase 4, G, S and R fine-tuned together.
    S: L_seg = L_ce(S(G(I)), M) + L_ce(S(Pab), M) + L_ce(S(I), M) [+ L_semi];
    G and R in one update: L_gen + L_recons, with L_recons = L_mse(Pab, I) + L_ce(S(Pab), M)
    and Pab = R(G(I) detached, M)."""
    M, logged = masks_after_segmentor_step(s, with_pab=True)
    Mf = M[:, None].to(s.I.dtype)
    with frozen(s.S), s.autocast():
        terms, G_I = generator_loss(s, M, Mf)
        terms.update(reconstructor_loss(s, G_I, M, Mf, adversarial=True))
    s.update("GR", terms)
    return {**logged, **terms}


PHASES = {1: phase1_generator_vs_segmentor, 2: phase2_reconstructor,
          3: phase3_reconstructor_vs_segmentor, 4: phase4_joint_finetune}
