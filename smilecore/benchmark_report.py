"""The benchmark's report (benchmark.py runs it): the runs' figures summarised over seeds
(`summarise`) and written as Markdown next to the paper's numbers (`markdown`), one table per
question: the paper's Table 2 analogue, striping, each known-truth addition, the ablation, and
the augmentation experiment (Table 3 analogue)."""
from __future__ import annotations

import statistics
from pathlib import Path

PAPER_TABLE2 = {"GVS": (0.997, 0.792), "SMILE-50": (0.978, 0.653), "SMILE-75": (0.987, 0.810),
                "SMILE-sup": (1.000, 0.822)}
PAPER_TABLE3 = {"real": 0.72, "real+pseudo-normal": 0.76, "real+pseudo-abnormal": 0.77, "real+both": 0.82}
AUG_CONDITIONS = tuple(PAPER_TABLE3)


def _mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v == v]
    if not values:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


# evaluate.evaluate's known-truth entries: the model's, and the references (same for every run)
KNOWN_TRUTH_MODEL_ROWS = ("model", "model_mask_given", "model_mask_given_no_fill", "model_S_mask_fill")
KNOWN_TRUTH_BASELINES = ("untouched", "mean_fill", "smooth_fill", "best_constant")


def summarise(results: dict, augmentation: dict, normalisations: dict[str, str]) -> dict:
    """Mean and sd over seeds of every figure the report shows, per variant; the known-truth
    references (from the first variant on the paper's scaling: `normalisations`, variant -> its
    normalisation); the augmentation experiment's Dice per training set."""
    out = {"variants": {}, "known_truth_baselines": {}, "augmentation": {}}
    for variant, by_seed in results.items():
        reps = list(by_seed.values())
        row = {k: _mean_sd([r[k] for r in reps]) for k in ("identity", "healthiness", "dice_S", "train_seconds")}
        for k in ("pseudo_normal_lesion", "input_lesion", "input_healthy"):
            row[f"dz_{k}"] = _mean_sd([r["through_plane_change"][k] for r in reps if "through_plane_change" in r])
        for k in ("model", "model_mask_given", "truth", "input", "mean_fill"):
            row[f"kt_dz_{k}"] = _mean_sd([r["known_truth_through_plane"][k] for r in reps
                                          if k in r.get("known_truth_through_plane", {})])
        row["outside_changed"] = _mean_sd([r["outside_lesion_changed"]["pooled"] for r in reps
                                           if "outside_lesion_changed" in r])
        healthy = [r["healthy_brain"]["pooled"] for r in reps if r.get("healthy_brain", {}).get("pooled")]
        for k in ("lesion_share_worst", "changed_share"):
            row[f"healthy_{k}"] = _mean_sd([h[k] for h in healthy])
        row["kt_dz_ratio"] = _mean_sd([r["known_truth_through_plane"]["model"] / r["known_truth_through_plane"]["truth"]
                                       for r in reps if r.get("known_truth_through_plane", {}).get("truth")])
        for k in ("identity", "healthiness"):
            row[f"S_mask_fill_{k}"] = _mean_sd([r["S_mask_fill"][k] for r in reps if "S_mask_fill" in r])
        for name in KNOWN_TRUTH_MODEL_ROWS:
            for m in ("psnr", "ssim", "mae"):
                row[f"kt_{name}_{m}"] = _mean_sd([r["known_truth"][name][m] for r in reps
                                                  if name in r.get("known_truth", {})])
        # PSNR depends on the scaling: each row keeps the mean fill on its own
        row["kt_mean_fill_psnr"] = _mean_sd([r["known_truth"]["mean_fill"]["psnr"] for r in reps if "known_truth" in r])
        out["variants"][variant] = row
        if reps and "known_truth" in reps[0] and not out["known_truth_baselines"] and \
                normalisations[variant] == "clip-percentile":   # the references on the paper's scaling
            out["known_truth_baselines"] = {b: reps[0]["known_truth"][b] for b in KNOWN_TRUTH_BASELINES
                                            if b in reps[0]["known_truth"]}
    for cond in AUG_CONDITIONS:
        out["augmentation"][cond] = _mean_sd([a[cond] for a in augmentation.values()])
    return out


def _fmt(d: dict, digits: int = 3) -> str:
    if d["n"] == 0:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}" if d["n"] > 1 else f"{d['mean']:.{digits}f}"


def _pct(d: dict) -> str:
    """A share as percent, mean ± sd over seeds."""
    return _fmt({k: 100 * v if k != "n" else v for k, v in d.items()}, 1) + (" %" if d["n"] else "")



def markdown(report: dict) -> str:
    """benchmark.md: the setting, then one table per question (every number is in benchmark.json)."""
    s, summ = report["settings"], report["summary"]
    variants = summ["variants"]
    lines = [*_setting(report), *_table2(summ), *_through_plane(variants), *_known_truth_additions(summ),
             *_ablation(variants), *_augmentation(s, summ), *_figures(report)]
    return "\n".join(lines)


def _setting(report: dict) -> list[str]:
    s, hw = report["settings"], report["hardware"]
    n_seeds = len(s["seeds"])
    return ["# SMILE benchmark", "",
            f"Data: `{s['data_dir']}` ({s['modality']}); split (seed {s['split_seed']}): "
            f"train {len(report['split']['train'])} cases, val {', '.join(report['split']['val']) or '–'}, "
            f"test {', '.join(report['split']['test'])}.",
            f"Networks: U-Nets width {s['base']}, depth {s['depth']}, {s['norm']} norm; epochs per phase "
            f"{s['epochs']} x {s['steps_per_epoch']} steps, batch {s['batch_size']}, lr {s['lr']}, crop {s['crop']}; "
            f"GVS gets the same steps in phase 1. Seeds {s['seeds']}: mean ± sd over {n_seeds} seed(s).",
            f"Hardware: {hw['cpu']} ({hw['cpu_cores']} cores, {hw['torch_threads']} torch threads), "
            f"GPU: {hw['gpu'] or 'none'}; torch {hw['torch']}. Wall time: {report['timings']['total_s']:.0f} s "
            "(finished runs reused from an earlier invocation count with their own training time below).", ""]


def _table2(summ: dict) -> list[str]:
    lines = ["## Table 2 analogue: identity, healthiness, Dice of S, error inside lesions with known truth", "",
             "Errors are on each model's own intensity scaling; the baselines below are on the paper's (the +median "
             "rows' mean fill is in the ablation table).", "",
             "| method | iD | h | Dice S | known-truth PSNR (dB) | SSIM | MAE | train s | paper iD / h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, row in summ["variants"].items():
        paper = PAPER_TABLE2.get(v)
        lines.append(f"| {v} | {_fmt(row['identity'])} | {_fmt(row['healthiness'])} | {_fmt(row['dice_S'])} | "
                     f"{_fmt(row['kt_model_psnr'], 2)} | {_fmt(row['kt_model_ssim'])} | {_fmt(row['kt_model_mae'], 4)} | "
                     f"{_fmt(row['train_seconds'], 0)} | {f'{paper[0]:.3f} / {paper[1]:.3f}' if paper else '–'} |")
    for b, kt in summ["known_truth_baselines"].items():
        lines.append(f"| baseline: {b.replace('_', ' ')} | – | – | – | {kt['psnr']:.2f} | {kt['ssim']:.3f} | "
                     f"{kt['mae']:.4f} | – | – |")
    return lines


def _through_plane(variants: dict) -> list[str]:
    lines = ["", "Through-plane change (striping; mean |V(z+1) - V(z)| between neighbouring axial slices, "
             "metrics.py): the pseudo-normal inside the expert's lesion, next to the input there and to "
             "healthy tissue of the same test volumes:", "",
             "| method | pseudo-normal in lesion | input in lesion | input, healthy tissue |", "|---|---|---|---|"]
    for v, row in variants.items():
        lines.append(f"| {v} | {_fmt(row['dz_pseudo_normal_lesion'], 4)} | {_fmt(row['dz_input_lesion'], 4)} | "
                     f"{_fmt(row['dz_input_healthy'], 4)} |")
    lines += ["", "Through-plane change against known truth: lesion volumes (8 adjacent slices) transplanted into "
              "8 adjacent normal slices of the test cases (evaluate.transplant_slabs), inside the lesion:", "",
              "| method | no mask | mask given, lesion fill | truth | input | mean fill |", "|---|---|---|---|---|---|"]
    for v, row in variants.items():
        lines.append(f"| {v} | " + " | ".join(_fmt(row[f'kt_dz_{k}'], 4) for k in
                                               ("model", "model_mask_given", "truth", "input", "mean_fill")) + " |")
    return lines


def _known_truth_additions(summ: dict) -> list[str]:
    lines = ["", "## Known truth: each addition and the references", "",
             "Error inside the transplanted lesions (PSNR dB / SSIM). *No mask*: G as trained. *Mask given, "
             "published*: review mode as the paper would do it (input outside the mask, G(I) inside). *Mask "
             "given, lesion fill* (shipped review mode): G gets the input with the mask filled from the tissue "
             "around it (smilecore/lesionfill.py). *S-mask fill* (tried, not shipped): the same fill with S's "
             "own mask, no mask given; its iD and h on the real abnormal test slices are in the last columns.", "",
             "| method | no mask | mask given, published | mask given, lesion fill | S-mask fill | "
             "S-mask fill iD / h |", "|---|---|---|---|---|---|"]
    kt = lambda row, name: f"{_fmt(row[f'kt_{name}_psnr'], 2)} / {_fmt(row[f'kt_{name}_ssim'])}"  # noqa: E731
    for v, row in summ["variants"].items():
        lines.append(f"| {v} | {kt(row, 'model')} | {kt(row, 'model_mask_given_no_fill')} | "
                     f"{kt(row, 'model_mask_given')} | {kt(row, 'model_S_mask_fill')} | "
                     f"{_fmt(row['S_mask_fill_identity'])} / {_fmt(row['S_mask_fill_healthiness'])} |")
    names = {"untouched": "untouched (identity)", "mean_fill": "mean-of-surroundings fill",
             "smooth_fill": "smooth fill (lesionfill.py, no G)", "best_constant": "ceiling: best constant (uses the truth)"}
    for b, ref in summ["known_truth_baselines"].items():
        lines.append(f"| {names[b]} | {ref['psnr']:.2f} / {ref['ssim']:.3f} | | | | |")
    return lines


def _ablation(variants: dict) -> list[str]:
    lines = ["", "## Ablation: what G changes, where it should and where it should not", "",
             "Paper's G (the SMILE rows) against the gated G started from SMILE-sup's S, 2D and 2.5D, and both with every "
             "case scaled by its brain's median instead of the paper's 99.5th percentile (the +median rows; their "
             "PSNR is on that scale, next to the mean fill on the same scale) (issue 14): error inside "
             "the transplanted lesions without a mask; share of brain more than 4 px from the expert lesion that "
             "G changes by more than 0.01; each test case with its tumour replaced by mirrored healthy tissue "
             "(evaluate.healthy_brain): the worst case's share called lesion by S and the share G changes; "
             "through-plane change inside transplanted 8-slice lesion volumes over the truth's.", "",
             "| method | PSNR no mask | mean fill | SSIM | changed > 4 px from lesion | healthy brain: called lesion "
             "(worst) | healthy brain: changed | iD | Dice S | through-plane / truth |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v, row in variants.items():
        lines.append(f"| {v} | {_fmt(row['kt_model_psnr'], 2)} | {_fmt(row['kt_mean_fill_psnr'], 2)} | "
                     f"{_fmt(row['kt_model_ssim'])} | "
                     f"{_pct(row['outside_changed'])} | {_pct(row['healthy_lesion_share_worst'])} | "
                     f"{_pct(row['healthy_changed_share'])} | {_fmt(row['identity'])} | {_fmt(row['dice_S'])} | "
                     f"{_fmt(row['kt_dz_ratio'], 2)} |")
    return lines


def _augmentation(s: dict, summ: dict) -> list[str]:
    if not any(d["n"] for d in summ["augmentation"].values()):
        return []
    lines = ["", f"## Table 3 analogue: a segmentor trained with augmentation from {s['augment_from']}", "",
             "| training data | Dice (test) | paper |", "|---|---|---|"]
    for cond, d in summ["augmentation"].items():
        lines.append(f"| {cond} | {_fmt(d)} | {PAPER_TABLE3[cond]:.2f} |")
    return lines


def _figures(report: dict) -> list[str]:
    lines = ["", "## Figures", ""]
    for v, figs in report["figures"].items():
        for kind, path in figs.items():
            lines.append(f"- {v}, {'abnormal | pseudo-normal | pseudo-abnormal' if kind == 'fig3' else 'known truth'}: "
                         f"![{v} {kind}]({Path(path).name})")
    lines += ["", "How each number is computed: smilecore/metrics.py, smilecore/evaluate.py and "
              "smilecore/benchmark.py docstrings; every number is in benchmark.json.", ""]
    return lines
