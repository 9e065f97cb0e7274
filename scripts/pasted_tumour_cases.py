"""No mask, cross-case known truth, through the engine (issue 24): real tumours pasted onto the
healthy brain of other cases, then `synthesize` on the whole volume with no mask (S finds the
lesion), scored inside the pasted tumour against the host's own T2 (docs/pasted-truth.md).

Per host (each of the labelled cases of DATA_DIR, seeded as scripts/cv_fill.py seeds it):
- the mask: another case's whole-tumour mask placed in the host's healthy brain by the fill CV's
  own placement (cv_fill.placed_case, inpainting_protocol.place_mask: as it lies, mirrored
  left-right, shifted; cut to the brain; at least TUMOUR_MARGIN voxels off the host's tumour), so
  the masks are those the fill CV voids;
- the paste (`paste`): inside that mask, the donor's T2 moved by the same mirror and shift, times
  host V99.5 / donor V99.5 (each over the brain: dataset.cache_case's `scale`). Why V99.5 and not
  the brain median: it is the model's own scaling (clip-percentile 99.5), so in the engine's units
  the pasted tumour is the donor's tumour unchanged; a median ratio would change its contrast to
  the host's scale by how much brain each case holds;
- truth: the host's own T2. Scored inside the pasted mask by inpainting_protocol.score (the
  challenge's SSIM / PSNR on the voided truth's scaling, and the structure ratios) for
  fill_network (the shipped default), g_fill (the same model with its fill network taken out:
  G fills), ring_mean (each axial slice's mask filled with the mean of a 5 px ring: told the mask)
  and pasted (the input unchanged: the tumour left in);
- for the two syntheses: recall (share of the pasted mask in S's lesion mask), own_recall (of the
  host's own tumour), far_changed (share of brain voxels more than FAR voxels from both the pasted
  mask and the host's tumour changed by more than 1 % of the input's V99.5, as
  healthiness_cases.py) and seconds.

One torch thread. The record is written after each case, and hosts already in it are skipped.
With `--makers CV_DIR --maker-recipe RECIPE` each host's synthesis runs with, as the model's S_t2, the
RECIPE segmentor of the cv_segmentor.py fold that held the host out, under the model's own mask rule
or `--rule threshold,share` (healthiness_cases.fold_judges): a segmentor recipe judged on hosts it
never saw.

    python scripts/pasted_tumour_cases.py DATA_DIR --out docs/fill-cv/pasted-notmask/cases.json
    python scripts/pasted_tumour_cases.py --summary docs/fill-cv/pasted-notmask/cases.json
    python scripts/pasted_tumour_cases.py DATA_DIR --figure HOST[,HOST] --figure-out docs/images/x.png
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
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_fill import placed_case  # noqa: E402  (the fill CV's placed masks)
from cv_segmentor import folds  # noqa: E402  (the same folds)

from smilecore import inpainting_protocol as protocol  # noqa: E402
from smilecore.cases import find_cases  # noqa: E402
from smilecore.dataset import cache_case  # noqa: E402
from smilecore.modelfile import SmileModel, default_model_path, load_model  # noqa: E402
from smilecore.networks import FILL_NET  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402
from smilecore.volume import load_label, load_nifti, reorient, to_canonical, voxel_sizes  # noqa: E402

FAR = 4          # voxels from both tumours beyond which the brain should stay as it is
SYNTHESES = ("fill_network", "g_fill")
METHODS = SYNTHESES + ("ring_mean", "pasted")
MEASURES = ("ssim", "psnr", "gradient_ratio", "intensity_ratio", "through_plane_ratio", "slice_step_ratio")
EXTRAS = ("recall", "own_recall", "far_changed", "seconds")
SPLIT = ("found_psnr", "missed_psnr", "found_ssim", "missed_ssim")   # S's found / missed part of the mask


# ---- the paste -------------------------------------------------------------------------------
def moved(volume: np.ndarray, placed: dict) -> np.ndarray:
    """`volume` mirrored left-right (axis 0) and shifted as place_mask moved the donor's mask."""
    base = volume[::-1] if placed["mirrored"] else volume
    return protocol._shifted(base, *placed["shift"])   # the placement's own shift, voxels leaving drop out


def paste(host: np.ndarray, donor: np.ndarray, mask: np.ndarray, placed: dict, scale: float) -> np.ndarray:
    """The host with the donor's intensities, moved as its mask was and times `scale`, inside
    `mask`; the host's own values everywhere else."""
    out = np.array(host, np.float32, copy=True)
    mask = np.asarray(mask, bool)
    out[mask] = moved(np.asarray(donor, np.float32), placed)[mask] * np.float32(scale)
    return out


def without_fill_network(model: SmileModel) -> SmileModel:
    """The same model with no fill network (synthesis_fill fills only when model.nets has one):
    G fills the lesion, as before the fill network."""
    return SmileModel({k: v for k, v in model.nets.items() if k != FILL_NET}, model.config, model.path)


def labelled_cases(data_dir: str, cache_dir: str | None = None) -> tuple[dict, dict]:
    """The labelled cases of `data_dir` by id, and their cache entries (cv_fill's cache by default)."""
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "smile-fill-cv-cache")
    cases = {c.case_id: c for c in find_cases(data_dir, require=True) if c.labeled}
    return cases, {i: cache_case(c, cache) for i, c in cases.items()}


# ---- one host --------------------------------------------------------------------------------
def canonical_t2(case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T2, whole-tumour label) in the canonical LPS voxel order the cache uses, and an LPS affine."""
    data, affine, _ = load_nifti(case.image("t2"), note_orientation=False)
    label = load_label(case.seg, data.shape, affine)
    turn = to_canonical(affine)
    spacing = voxel_sizes(affine)
    lps = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])   # as review_fill gives the engine
    return reorient(data, turn), reorient(label, turn), lps


def full(a: np.ndarray, shape: tuple) -> np.ndarray:
    """A cached volume (slices above the last kept one cut off) padded back to the volume's shape."""
    return np.pad(a, [(0, n - m) for n, m in zip(shape, a.shape)])


def pasted_host(host_id: str, cases: dict, cached: dict) -> dict:
    """The host's pasted input, truth, tumour, pasted mask and placement (the fill CV's seed).
    `cases`: the labelled cases (cases.Case) by id, `cached`: their cache entries."""
    order = sorted(cached)
    donors = [cached[d] for d in order if d != host_id]
    _, _, mask, placed = placed_case(cached[host_id], donors, order.index(host_id))
    truth, tumour, affine = canonical_t2(cases[host_id])
    donor_t2, donor_label, _ = canonical_t2(cases[placed["donor"]])
    mask = full(mask, truth.shape)
    if not moved(donor_label, placed)[mask].all():
        raise ValueError(f"{host_id}: the placed mask leaves the donor {placed['donor']}'s tumour")
    scale = cached[host_id].scale / cached[placed["donor"]].scale
    return {"pasted": paste(truth, donor_t2, mask, placed, scale), "truth": truth, "tumour": tumour,
            "mask": mask, "placed": placed, "scale": float(scale), "affine": affine,
            "mask_ml": float(mask.sum() * np.prod(cached[host_id].spacing) / 1000)}


def synthesis_scores(model, host: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """The no-mask synthesis of the pasted input, scored; its pseudo-normal and S's lesion mask."""
    x, mask, tumour = host["pasted"], host["mask"], host["tumour"]
    t0 = time.time()
    result = synthesize(x, host["affine"], model, notify=lambda m: None)
    seconds = time.time() - t0
    lesion = result.lesion_mask > 0
    brain = x > 0
    far = brain & (ndimage.distance_transform_edt(~(mask | tumour)) > FAR)
    changed = (np.abs(result.pseudo_normal - x) > 0.01 * np.percentile(x[brain], 99.5)) & far
    scores = protocol.score(result.pseudo_normal, host["truth"], protocol.voided(host["truth"], mask), mask)
    scores.update(recall=float((lesion & mask).sum() / mask.sum()),
                  own_recall=float((lesion & tumour).sum() / max(tumour.sum(), 1)),
                  far_changed=float(changed.sum() / far.sum()), seconds=round(seconds, 1))
    return scores, result.pseudo_normal, lesion


def split_scores(fill: np.ndarray, host: dict, lesion: np.ndarray) -> dict:
    """PSNR and SSIM (the challenge's, on the whole mask's voided scaling) in the part of the
    pasted mask that S found and in the part it missed: the fill's share against S's."""
    given = protocol.voided(host["truth"], host["mask"])
    out = {}
    for part, where in (("found", host["mask"] & lesion), ("missed", host["mask"] & ~lesion)):
        if where.any():
            m = protocol.challenge_metrics(fill, host["truth"], given, where)
            out.update({f"{part}_psnr": m["psnr"], f"{part}_ssim": m["ssim"]})
    return out


def judge(host_id: str, cases: dict, cached: dict, models: dict) -> dict:
    host = pasted_host(host_id, cases, cached)
    given = protocol.voided(host["truth"], host["mask"])
    scores, fills = {}, {}
    for name, model in models.items():
        scores[name], fills[name], lesion = synthesis_scores(model, host)
    fills["ring_mean"] = protocol.ring_mean_fill(given, host["mask"])
    fills["pasted"] = host["pasted"]
    for name in ("ring_mean", "pasted"):
        scores[name] = protocol.score(fills[name], host["truth"], given, host["mask"])
    for name in fills:   # split by the last run's S (S is the same network in every run)
        scores[name].update(split_scores(fills[name], host, lesion))
    return {"mask": host["placed"], "mask_ml": round(host["mask_ml"], 2), "scale_ratio": round(host["scale"], 4),
            "scores": scores}


def run_hosts(record: dict, out: Path, hosts: list[str], only: str, judge_host, line) -> None:
    """judge_host(host id) for each host not yet in `record` (or in `only`, comma-separated, if given),
    each result written to `out` at once (an interrupted run continues) and told as line(result)."""
    wanted = set(filter(None, only.split(",")))
    for cid in hosts:
        if cid in record["cases"] or (wanted and cid not in wanted):
            continue
        t0 = time.time()
        record["cases"][cid] = judge_host(cid)
        print(f"{cid} ({time.time() - t0:.0f} s): {line(record['cases'][cid])}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1))


# ---- the summary -----------------------------------------------------------------------------
def fold_means(cases: dict, method: str, key: str) -> list[float]:
    return [float(np.mean([cases[c]["scores"][method][key] for c in fold])) for fold in folds(sorted(cases))]


def summary(path: str) -> str:
    record = json.loads(Path(path).read_text())
    cases, held = record["cases"], record.get("held_out", {})
    lines = [f"{len(cases)} of {len(record['hosts'])} hosts, model {Path(record['model']).name}; mean +- SD over the 4 folds "
             "(each fold the mean of its 3 hosts)", ""]
    if sorted(cases) == record["hosts"]:   # the folds are those of all the hosts
        keys = MEASURES + EXTRAS + tuple(k for k in SPLIT if all(k in v["scores"]["pasted"] for v in cases.values()))
        lines += ["| fill | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for method in METHODS:
            cells = []
            for key in keys:
                if key not in cases[next(iter(cases))]["scores"][method]:
                    cells.append("")
                    continue
                v = fold_means(cases, method, key)
                cells.append(f"{np.mean(v):.3f} +- {np.std(v):.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", "| fold | hosts | " + " | ".join(f"{m} PSNR" for m in METHODS)
                  + " | fill_network - ring_mean | bar met |", "|---" * (len(METHODS) + 4) + "|"]
        per = {m: fold_means(cases, m, "psnr") for m in METHODS}
        for k, fold in enumerate(folds(sorted(cases))):
            met = "yes" if per["fill_network"][k] >= per["ring_mean"][k] else "no"
            lines.append(f"| {k} | {', '.join(c.replace('Brats18_', '') for c in fold)} | "
                         + " | ".join(f"{per[m][k]:.2f}" for m in METHODS)
                         + f" | {per['fill_network'][k] - per['ring_mean'][k]:+.3f} | {met} |")
    lines += ["", "per host (SSIM / PSNR; recall, far changed of the fill network's run):"]
    for c in sorted(cases):
        s = cases[c]["scores"]
        tag = " (not in the default's training split: " + held[c] + ")" if c in held else ""
        lines.append(f"  {c}{tag}: donor {cases[c]['mask']['donor']}, {cases[c]['mask_ml']} mL; " + ", ".join(
            f"{m} {s[m]['ssim']:.3f} / {s[m]['psnr']:.2f}" for m in METHODS)
            + f"; recall {s['fill_network']['recall']:.3f}, far {100 * s['fill_network']['far_changed']:.2f} %")
    return "\n".join(lines)


# ---- the figure ------------------------------------------------------------------------------
def host_views(host_id: str, cases: dict, cached: dict, models: dict) -> tuple[list, np.ndarray, float, tuple]:
    """The figure's columns for one host (axial and coronal views each), the mask's outline in
    both, the display's top (the truth's V99.5) and the mask's centre."""
    from fill_figure import MARGIN, views
    host = pasted_host(host_id, cases, cached)
    filled = {name: synthesis_scores(model, host)[1] for name, model in models.items()}
    idx = np.nonzero(host["mask"])
    centre = tuple(int(round(float(np.mean(i)))) for i in idx)
    box = tuple((max(int(i.min()) - MARGIN, 0), min(int(i.max()) + 1 + MARGIN, n)) for i, n in zip(idx, host["mask"].shape))
    volumes = (host["pasted"], filled["fill_network"], filled["g_fill"], host["truth"])
    hi = float(np.percentile(host["truth"][host["truth"] > 0], 99.5))
    return [views(v, centre, box) for v in volumes], views(host["mask"].astype(np.float32), centre, box), hi, centre


def figure(host_ids: list[str], cases: dict, cached: dict, models: dict, out: Path) -> None:
    """Axial and coronal views through each host's pasted mask's centre, the mask outlined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = ("pasted input", "pseudo-normal, fill network", "pseudo-normal, G's fill", "truth (host's T2)")
    fig, axes = plt.subplots(2 * len(host_ids), len(titles), figsize=(2.3 * len(titles), 2.4 * 2 * len(host_ids)))
    for h, host_id in enumerate(host_ids):
        columns, outline, hi, centre = host_views(host_id, cases, cached, models)
        for c, pair in enumerate(columns):
            for v, view in enumerate(pair):
                ax = axes[2 * h + v, c]
                ax.imshow(view, cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
                ax.contour(outline[v], levels=[0.5], colors="tab:orange", linewidths=0.5)
                ax.set_xticks([]), ax.set_yticks([])
        axes[2 * h, 0].set_ylabel(f"{host_id.replace('Brats18_', '')}\naxial z={centre[2]}", fontsize=7)
        axes[2 * h + 1, 0].set_ylabel(f"coronal y={centre[1]}", fontsize=7)
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"{out}: {out.stat().st_size // 1024} KB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--out", help="the per-host record (JSON)")
    ap.add_argument("--model", default=None, help="model file (default: the shipped default)")
    ap.add_argument("--cases", default="", help="only these hosts (comma-separated)")
    ap.add_argument("--cache-dir", default=None, help="cv_fill.py's cache of normalised cases")
    ap.add_argument("--summary", help="print the fold summary of this record and stop")
    ap.add_argument("--figure", help="hosts (comma-separated): draw their views to --figure-out instead of scoring")
    ap.add_argument("--figure-out", default="pasted-truth.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--makers", default=None, help="cv_segmentor.py's folder: each host's fold S as S_t2")
    ap.add_argument("--maker-recipe", default="mirror", help="the makers' recipe (e.g. mirror+opposite)")
    ap.add_argument("--rule", default=None, help="with --makers: threshold,share of S_t2's mask (default: the model's)")
    args = ap.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return 0
    torch.set_num_threads(args.threads)
    model_path = str(args.model or default_model_path())
    model = load_model(model_path)
    if FILL_NET not in model.nets:
        raise SystemExit(f"{model_path}: the model has no fill network to take out")
    models = {"fill_network": model, "g_fill": without_fill_network(model)}
    makers = {}
    if args.makers:
        from healthiness_cases import fold_judges, mask_rule_of
        makers = fold_judges(args.makers, model_path, Path(tempfile.mkdtemp()), args.maker_recipe,
                             mask_rule_of(model, args.rule))
    models_of = {cid: {"fill_network": m, "g_fill": without_fill_network(m)} for cid, m in makers.items()}
    cases, cached = labelled_cases(args.data_dir, args.cache_dir)
    order = sorted(cached)
    if args.figure:
        figure(args.figure.split(","), cases, cached, models, Path(args.figure_out))
        return 0
    out = Path(args.out)
    split = model.config.get("training", {}).get("split", {})
    record = json.loads(out.read_text()) if out.is_file() else {
        "model": model_path, "threads": args.threads, "makers": args.makers,
        "maker_recipe": args.maker_recipe if args.makers else None,
        "rule": mask_rule_of(model, args.rule) if args.makers else None, "scale": "host V99.5 / donor V99.5 over the brain",
        "hosts": order, "held_out": {c: part for part in ("val", "test") for c in split.get(part, [])}, "cases": {}}
    run_hosts(record, out, order, args.cases, lambda cid: judge(cid, cases, cached, models_of.get(cid, models)),
              lambda r: ", ".join(f"{m} PSNR {r['scores'][m]['psnr']:.2f}" for m in METHODS)
              + f", recall {r['scores']['fill_network']['recall']:.3f}")
    print(summary(str(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
