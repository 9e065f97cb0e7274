"""Cross-validation of the fill on the inpainting challenge's protocol (issue 24), over the 12
labelled BraTS cases: the folds of scripts/cv_segmentor.py (4 folds of 3 test cases, FOLD_SEED).

Each fold trains a FillNet (smilecore/fillnet.py, self-supervised on the other nine cases, no
labels beyond keeping holes off their tumours) within a wall-time budget, then, on each of its
three test cases, voids healthy tissue inside another case's tumour mask
(inpainting_protocol.place_mask) and scores three fills against the real tissue
(inpainting_protocol.score: the challenge's SSIM / PSNR / MSE and the structure ratios):

  ring_mean   each axial slice's mask filled with the mean of a 5-pixel ring around it
  review      today's review mode: smile synthesize --mask on the voided image, with the shipped
              default model (engine, the mask's slab of slices)
  fillnet     the fold's FillNet (--start: the fill it adds its change to; its other-hemisphere
              channel has the case's own tumour zeroed, the label standing in for S's mask);
              with it `fillnet_ring`, what review mode makes of that fill (each part given the
              ring's mean, synthesis_fill.ring_matched), and `fillnet_ring_z<S>`, that with the
              through-plane pass at each --z-sigmas S

With --methods ring_mean,review_nopass (no training), review mode runs once with the engine's
through-plane pass left out (`review_nopass`), and the pass (synthesis_blend.through_plane_pass,
the function compose_outputs applies) is applied to that fill: `review` at the model's sigma
(synthesis_blend.pass_sigma, recorded as engine_z_sigma; 0: the same as review_nopass),
`review_z<S>` at each --z-sigmas S. --save-fills keeps the pass-free fill for the figure
(scripts/fill_figure.py).

Images are the cached, normalised T2 volumes (dataset.cache_case, the default model's scaling);
the challenge's own scaling is applied inside the scoring.

    python scripts/cv_fill.py DATA_DIR --out docs/fill-cv [--minutes 10 | --steps N] [--folds 0,1]
                              [--start smooth|mirror] [--no-review] [--methods ring_mean,review_nopass]
    python scripts/cv_fill.py DATA_DIR --out docs/fill-cv --summary

Each fold writes DIR/fold<k>.json and is skipped when present, so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import N_FOLDS, folds  # noqa: E402  (the same folds as the segmentor's)

from smilecore import inpainting_protocol as protocol  # noqa: E402
from smilecore.cases import find_cases  # noqa: E402
from smilecore.dataset import cache_case  # noqa: E402
from smilecore.fillnet import STARTS, fill_volume, train_fillnet  # noqa: E402
from smilecore.lesionfill import MIRROR_ALPHA  # noqa: E402
from smilecore.synthesis_blend import pass_sigma, through_plane_pass  # noqa: E402
from smilecore.synthesis_fill import ring_matched  # noqa: E402

METHODS = ("ring_mean", "review", "fillnet")
MEASURES = ("ssim", "psnr", "mse", "gradient_ratio", "intensity_ratio", "through_plane_ratio")
STRIPES = ("slice_bias_jump", "slice_step_ratio", "z_share_ratio")   # records from 2026-12-02 03:30 on


def volume(case, what: str = "image") -> np.ndarray:
    """A cached case back as an X x Y x Z volume (slices not kept: 0)."""
    stack = np.asarray(getattr(case, what), np.float32)
    out = np.zeros((*stack.shape[1:], int(case.z.max()) + 1), np.float32)
    out[:, :, case.z] = np.moveaxis(stack, 0, 2)
    return out


def placed_case(case, donors: list, seed: int) -> tuple:
    """(truth, the case's own tumour, the placed mask, how it was placed) of one test case: the
    voiding every fill of the cross-validation is judged on (scripts/fill_baselines.py too)."""
    truth = volume(case)
    tumour = volume(case, "mask") > 0
    masks = [volume(d, "mask") > 0 for d in donors]
    masks = [m[:truth.shape[0], :truth.shape[1], :truth.shape[2]] for m in masks]
    masks = [np.pad(m, [(0, a - b) for a, b in zip(truth.shape, m.shape)]) for m in masks]
    mask, placed = protocol.place_mask(truth > 0, tumour, masks, seed=seed)
    placed["donor"] = donors[placed["donor"]].case_id
    return truth, tumour, mask, placed


def with_pass(fill: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The engine's through-plane pass on a pass-free review fill: its region is the brain and
    the mask, and the mask lies in the voided image's brain (synthesis_inputs.voided_brain)."""
    out = np.array(fill, np.float32, copy=True)
    through_plane_pass(out, np.asarray(mask, bool), sigma)
    return out


def judge_case(case, donors: list, seed: int, fillnet, model, log, methods=METHODS, z_sigmas=(),
               save_dir=None) -> dict:
    truth, tumour, mask, placed = placed_case(case, donors, seed)
    given = protocol.voided(truth, mask)
    fills, seconds = {}, {}
    for name in methods:
        t0 = time.time()
        if name == "ring_mean":
            fills[name] = protocol.ring_mean_fill(given, mask)
        elif name == "review" and model is not None:
            fills[name] = protocol.review_fill(given, mask, model, case.spacing)
        elif name == "review_nopass" and model is not None:
            fills[name] = protocol.review_fill(given, mask, model, case.spacing, z_sigma=0)
            if save_dir is not None:
                save_dir.mkdir(parents=True, exist_ok=True)
                np.save(save_dir / f"{case.case_id}_review_nopass.npy", fills[name])
            fills["review"] = with_pass(fills[name], mask, pass_sigma(model.config))   # the model's (0: no pass)
            for sigma in z_sigmas:
                fills[f"review_z{sigma:g}"] = with_pass(fills[name], mask, sigma)
        elif name == "fillnet":
            fills[name] = fill_volume(fillnet, given, mask, tumour)   # the label stands in for S's mask
            # what review mode makes of it: each part given the ring's mean, then the pass at each sigma
            fills["fillnet_ring"] = ring_matched(fills[name], given, mask)
            for sigma in z_sigmas:
                fills[f"fillnet_ring_z{sigma:g}"] = with_pass(fills["fillnet_ring"], mask, sigma)
        seconds[name] = round(time.time() - t0, 1)
    scores = {name: protocol.score(f, truth, given, mask) for name, f in fills.items()}
    log(f"  {case.case_id}: " + ", ".join(f"{n} SSIM {s['ssim']:.3f} PSNR {s['psnr']:.2f} "
                                          f"jump {s['slice_bias_jump']:.3f} steps {s['slice_step_ratio']:.2f}" for n, s in scores.items()))
    return {"case": case.case_id, "mask": placed, "mask_ml": float(mask.sum()) * float(np.prod(case.spacing)) / 1000,
            "scores": scores, "seconds": seconds}


def run_fold(k: int, test_ids: list[str], cached: dict, model, args, log) -> dict:
    train = [cached[i] for i in sorted(cached) if i not in test_ids]
    methods = tuple(args.methods.split(","))
    net, run = None, {"steps": 0, "seconds": 0}   # no FillNet measured: none trained
    if "fillnet" in methods:
        net, run = train_fillnet(train, steps=args.steps, minutes=args.minutes, crop=args.crop,
                                 batch_size=args.batch_size, base=args.base, depth=args.depth, lr=args.lr,
                                 seed=args.seed, start=args.start, alpha=args.alpha, texture=args.texture, log=log)
        log(f"  trained: {run['steps']} steps in {run['seconds']} s")
    order = sorted(cached)
    sigmas = tuple(float(v) for v in args.z_sigmas.split(",") if v)
    save = Path(args.cache_dir or tempfile.gettempdir()) / "fills" if args.save_fills else None
    cases = [judge_case(cached[i], [cached[d] for d in order if d != i], order.index(i), net, model, log,
                        methods, sigmas, save) for i in test_ids]
    return {"fold": k, "test": test_ids, "train": [c.case_id for c in train], "training": run,
            "modality": args.modality, "review_model": args.review_model if model is not None else None,
            "engine_z_sigma": pass_sigma(model.config) if model is not None else None,
            "cases": cases}


def summary(out: Path) -> str:
    results = [json.loads(p.read_text()) for p in sorted(out.glob("fold*.json"))]
    scored = [s for r in results for c in r["cases"] for s in c["scores"].values()]
    measures = MEASURES + tuple(m for m in STRIPES if all(m in s for s in scored))
    rows = [f"{len(results)} folds: " + ", ".join(f"fold {r['fold']} {r['training']['steps']} steps / "
                                                 f"{r['training']['seconds']} s" for r in results),
            "", "| fill | " + " | ".join(measures) + " |", "|---" * (len(measures) + 1) + "|"]
    for name in recorded(results):
        measured = [r for r in results if all(name in c["scores"] for c in r["cases"])]
        if not measured:
            continue
        cells = []
        for m in measures:   # per fold: the mean over its test cases; then mean +- SD over folds
            per_fold = [np.mean([c["scores"][name][m] for c in r["cases"]]) for r in measured]
            cells.append(f"{np.mean(per_fold):.3f} +- {np.std(per_fold):.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows + ["", per_fold_table(results)])


def recorded(results: list[dict]) -> list[str]:
    """The fills the records hold, in the order first met."""
    return list(dict.fromkeys(name for r in results for c in r["cases"] for name in c["scores"]))


def per_fold_table(results: list[dict]) -> str:
    """SSIM / PSNR of each fill in each fold (the mean over its test cases)."""
    names = recorded(results)
    rows = ["| fold | test cases | FillNet steps | " + " | ".join(f"{n} SSIM / PSNR" for n in names) + " |",
            "|---" * (len(names) + 3) + "|"]
    for r in results:
        cells = []
        for name in names:
            got = [c["scores"][name] for c in r["cases"] if name in c["scores"]]
            cells.append(f"{np.mean([g['ssim'] for g in got]):.3f} / {np.mean([g['psnr'] for g in got]):.2f}"
                         if got else "not run")
        rows.append(f"| {r['fold']} | {', '.join(r['test'])} | {r['training']['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def training_options(ap: argparse.ArgumentParser, steps: int) -> None:
    """FillNet's training settings (train_fillnet's), shared with scripts/add_fill_network.py."""
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=6)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texture", type=float, default=0.0, help="weight of the loss's texture term (fillnet.texture_gap)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--folds", default=",".join(str(k) for k in range(N_FOLDS)))
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of each fold's training")
    training_options(ap, steps=100000)
    ap.add_argument("--start", default="smooth", choices=STARTS, help="what FillNet adds its change to")
    ap.add_argument("--alpha", type=float, default=MIRROR_ALPHA, help="share of the mirror's texture (--start mirror)")
    ap.add_argument("--modality", default="t2")
    ap.add_argument("--review-model", default=None, help="model file for the review baseline (default: shipped)")
    ap.add_argument("--no-review", action="store_true", help="leave out the review-mode baseline")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="fills to score (review_nopass: review without the through-plane pass, then with it)")
    ap.add_argument("--z-sigmas", default="", help="more sigmas of the pass to score (with review_nopass or fillnet)")
    ap.add_argument("--save-fills", action="store_true", help="keep the pass-free review fills under CACHE_DIR/fills")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--summary", action="store_true", help="print the table of what exists and stop")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.summary:
        print(summary(out))
        return 0
    torch.set_num_threads(args.threads)
    model = None
    if not args.no_review:
        from smilecore.modelfile import default_model_path, load_model
        args.review_model = str(args.review_model or default_model_path())
        model = load_model(args.review_model)
    cache_dir = Path(args.cache_dir or Path(tempfile.gettempdir()) / "smile-fill-cv-cache")  # never under docs
    cases = {c.case_id: c for c in find_cases(args.data_dir, require=True) if c.labeled}
    cached = {i: cache_case(c, cache_dir, modality=args.modality) for i, c in cases.items()}
    fold_ids = folds(list(cases))

    def log(msg):
        print(msg, flush=True)
    for k in (int(f) for f in args.folds.split(",")):
        path = out / f"fold{k}.json"
        if path.is_file():
            continue
        log(f"fold {k}: test {fold_ids[k]}")
        result = run_fold(k, fold_ids[k], cached, model, args, log)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    print(summary(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
