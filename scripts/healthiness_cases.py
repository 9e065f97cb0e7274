"""How much tumour a model's pseudo-normal leaves, and how much far brain it changes, on every
labelled case of a folder (docs/fill-cv.md, fourth stage; demo_healthiness.py does one demo).

Per case: synthesis from the T2 (no mask), then a judge's lesion mask on the pseudo-normal.
h = 1 - (expert tumour voxels the judge marks again) / (expert tumour voxels); far changed = brain
voxels more than 4 voxels from the expert tumour whose value changed by more than 1 % of the
brain's V99.5, over all such voxels; dice = the synthesis's own lesion mask against the expert's
(whole tumour, every slice). Mean +- SD over the 4 folds of cv_segmentor.py (each fold the mean of
its 3 cases).

The judge: by default the model itself (its segmentor, as synthesis runs it), which may have seen
the cases in training, so it judges every model alike. With `--judges CV_DIR`, for each case the
T2 segmentor that cv_segmentor.py trained on the other folds (CV_DIR/mirror/fold<k>.pt, recipe
mirror), run as the model's S_t2 through the same synthesis (issue 23: "a segmentor trained on the
other folds"); the judge has never seen the case (the model that made the pseudo-normal may have).

With `--makers CV_DIR --maker-recipe RECIPE`, the pseudo-normal itself is made with, as the model's
S_t2, the RECIPE segmentor of the fold that held the case out (a recipe judged through synthesis on
cases it never saw), under the model's own S_t2 mask rule (threshold, parts, flips) or `--rule`.

    python scripts/healthiness_cases.py MODEL DATA_DIR --out RECORD.json [--judges CV_DIR]
        [--makers CV_DIR --maker-recipe mirror+opposite] [--rule 0.6,0.2]
    python scripts/healthiness_cases.py --summary RECORD.json [RECORD2.json ...]

With `--reaches 0,8,12,...` (and `--reach-ps 1,0.5`: S's probability above which a voxel also
anchors the reach, synthesis_blend.reach_seed; 1 the mask alone), each case is synthesised once with no reach (the model's
"change_reach_mm" set to 0: G's change kept wherever its gate opened), and each reach R (mm) is
then applied to that pseudo-normal by the engine's own function (synthesis_blend.kept_near_lesion:
it only touches voxels outside the lesion, where the through-plane pass does not reach) and judged;
`bright_changed`, the share of bright non-tumour tissue (metrics.bright_tissue: CSF, at least
BRIGHT_MARGIN voxels from the expert tumour) that changed by more than 1 % of V99.5, says how much
normal anatomy the pseudo-normal alters. `again_in_mask` and `again_outside_mask` split 1 - h:
the tumour the judge finds again inside the maker's lesion mask (the fill) or outside it (tumour
the maker left); `--judge-input` adds what the judge finds on the input itself (h's ceiling).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import folds  # noqa: E402  (the same folds)
from flair_fold_check import model_with_fold  # noqa: E402

from smilecore.cases import find_cases  # noqa: E402
from smilecore.metrics import bright_tissue, dice, share_marked  # noqa: E402
from smilecore.modelfile import load_model  # noqa: E402
from smilecore.modelfile import RECIPE_KEYS  # noqa: E402
from smilecore.networks import T2_NET  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402
from smilecore.synthesis_blend import kept_near_lesion, reach_seed  # noqa: E402


def reach_key(reach: float, p: float) -> str:
    """A record's name for a reach: mm, and the probability that also anchors it (1: the mask alone)."""
    return f"{reach:g}" if p >= 1 else f"{reach:g}@p{p:g}"


def reaches_of(text: str | None, ps: str) -> list[tuple[float, float]] | None:
    """--reaches mm values x --reach-ps probabilities (a reach of 0, no limit, once)."""
    if not text:
        return None
    pairs = [(float(r), float(p)) for r in text.split(",") for p in ps.split(",")]
    return list(dict.fromkeys((r, 1.0) if r <= 0 else (r, p) for r, p in pairs))


def judge(model, case, judge_model=None, reaches=None, judge_input: bool = False) -> dict:
    """The figures of one case; `judge_model` marks the lesion left in the pseudo-normal (default:
    `model`); `reaches`: mm values, each judged on the one no-reach synthesis (module docstring);
    `judge_input`: also the share of the tumour the judge finds on the input itself (h's ceiling:
    tumour the judge cannot find on the input counts as removed)."""
    image = nib.load(case.image("t2"))
    t2 = np.asarray(image.dataobj, np.float32)
    tumour = np.asarray(nib.load(case.seg).dataobj) > 0
    t0 = time.time()
    if reaches is not None:
        model.config["change_reach_mm"] = 0
    result = synthesize(t2, image.affine, model, notify=lambda m: None)
    lesion = result.lesion_mask > 0
    figures = lambda pn: pseudo_normal_figures(pn, t2, tumour, image.affine, judge_model or model, lesion)  # noqa: E731
    out = {"dice": dice(lesion, tumour), "segmentor": result.segmentor}
    if judge_input:
        out["judge_finds_on_input"] = found_again(t2, tumour, image.affine, judge_model or model)
    if reaches is None:
        out.update(figures(result.pseudo_normal))
    else:
        spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
        out["reach"] = {}
        for reach, p in reaches:
            pn = np.array(result.pseudo_normal, np.float32)
            kept_near_lesion(pn, t2, reach_seed(lesion, result.lesion_probability, p), spacing, reach)
            out["reach"][reach_key(reach, p)] = figures(pn)
    out["seconds"] = round(time.time() - t0)
    return out


def found_again(image, tumour, affine, judge_model) -> float:
    """The share of the expert tumour that the judge marks on `image`."""
    again = synthesize(image, affine, judge_model, notify=lambda m: None).lesion_mask > 0
    return float((again & tumour).sum() / tumour.sum())


def pseudo_normal_figures(pseudo_normal, t2, tumour, affine, judge_model, lesion=None) -> dict:
    """h (expert tumour the judge does not find again), far brain changed, bright tissue changed;
    with the maker's `lesion` mask, where the tumour found again lies: inside it (in the fill) or
    outside it (tumour the maker left), each a share of the tumour (they add up to 1 - h)."""
    again = synthesize(pseudo_normal, affine, judge_model, notify=lambda m: None).lesion_mask > 0
    brain = t2 > 0
    far = brain & (ndimage.distance_transform_edt(~tumour) > 4)
    changed = np.abs(pseudo_normal - t2) > 0.01 * np.percentile(t2[brain], 99.5)
    out = {"h": 1 - float((again & tumour).sum() / tumour.sum()), "far_changed": float((changed & far).sum() / far.sum()),
           "bright_changed": share_marked(changed, bright_tissue(t2, brain, tumour))}
    if lesion is not None:
        out["again_in_mask"] = float((again & tumour & lesion).sum() / tumour.sum())
        out["again_outside_mask"] = float((again & tumour & ~lesion).sum() / tumour.sum())
    return out


def fold_judges(cv_dir: str, model_path: str, tmp: Path, recipe: str = "mirror", rule: dict | None = None) -> dict:
    """case id -> the model with, as its S_t2, the `recipe` S (a T2 recipe: mirror, mirror+neg,
    mirror+opposite) of the fold that held the case out; `rule`: mask-rule keys for its recipe."""
    judges = {}
    for weights in sorted((Path(cv_dir) / recipe).glob("fold*.pt")):
        record = json.loads(weights.with_suffix(".json").read_text())
        out = tmp / f"{recipe}-{weights.name}"
        judge_model = model_with_fold(Path(model_path), weights, record, out, role=T2_NET)
        judge_model.config[RECIPE_KEYS[T2_NET]].update(rule or {})
        judges.update({case_id: judge_model for case_id in record["test"]})
    return judges


def mask_rule_of(model, rule: str | None) -> dict:
    """The S_t2 mask-rule keys to use: `rule` ("threshold,share"), else the model's own."""
    if rule:
        threshold, share = (float(v) for v in rule.split(","))
        return {"lesion_threshold": threshold, "min_component_share": share}
    recipe = model.recipe(T2_NET) or {}
    return {k: recipe[k] for k in ("lesion_threshold", "min_component_share", "test_time_flips") if k in recipe}


def summary(paths) -> str:
    lines = []
    for path in paths:
        record = json.loads(Path(path).read_text())
        if any("reach" in v for v in record["cases"].values()):
            lines += reach_summary(record)
            continue
        cases = record["cases"]
        for key in ("h", "far_changed", "dice"):
            if not all(key in v for v in cases.values()):
                continue
            per_fold = [np.mean([cases[c][key] for c in fold]) for fold in folds(sorted(cases))]
            worst = (max if key == "far_changed" else min)(cases[c][key] for c in cases)
            judged = " (judged per fold)" if record.get("judges") and key == "h" else ""
            lines.append(f"{Path(record['model']).name} {key}{judged}: {np.mean(per_fold):.3f} +- {np.std(per_fold):.3f} "
                         f"over folds, worst case {worst:.3f}")
    return "\n".join(lines)


def reach_summary(record: dict) -> list[str]:
    """Per reach: each figure's mean +- SD over folds and its worst case."""
    cases = record["cases"]
    lines = ["| reach (mm) | h | worst h | far changed | worst | bright tissue changed | worst |", "|---" * 7 + "|"]
    for reach in next(iter(cases.values()))["reach"]:
        cells = []
        for key, worst in (("h", min), ("far_changed", max), ("bright_changed", max)):
            per_fold = [np.mean([cases[c]["reach"][reach][key] for c in fold]) for fold in folds(sorted(cases))]
            w = worst(cases, key=lambda c: cases[c]["reach"][reach][key])
            cells += [f"{np.mean(per_fold):.4f} +- {np.std(per_fold):.4f}", f"{cases[w]['reach'][reach][key]:.4f} ({w[8:]})"]
        lines.append(f"| {'none' if reach == '0' else reach.replace('@p', ' mm, p > ')} | " + " | ".join(cells) + " |")
    return lines + where_found(cases)


def where_found(cases: dict) -> list[str]:
    """Per case, for the first reach: where the tumour found again lies (records with again_in_mask)."""
    first = lambda c: next(iter(cases[c]["reach"].values()))  # noqa: E731
    if not all("again_in_mask" in first(c) for c in cases):
        return []
    lines = ["", "| case | Dice | h | found again in the maker's mask (the fill) | outside it | judge finds on the input |",
             "|---|---|---|---|---|---|"]
    for c in sorted(cases, key=lambda c: first(c)["h"]):
        f = first(c)
        on_input = f"{cases[c]['judge_finds_on_input']:.3f}" if "judge_finds_on_input" in cases[c] else ""
        lines.append(f"| {c[8:]} | {cases[c]['dice']:.3f} | {f['h']:.3f} | {f['again_in_mask']:.3f} | "
                     f"{f['again_outside_mask']:.3f} | {on_input} |")
    return lines


def maker_options(ap: argparse.ArgumentParser, reaches: str | None, maker_recipe: str) -> None:
    """The options of the fold makers and of the reach, shared with healthy_brain_cases.py."""
    ap.add_argument("--makers", default=None, help="cv_segmentor.py's folder: make each pseudo-normal with the fold S")
    ap.add_argument("--maker-recipe", default=maker_recipe, help="the makers' recipe (e.g. mirror+opposite)")
    ap.add_argument("--rule", default=None, help="threshold,share of S_t2's mask (default: the model's)")
    ap.add_argument("--reaches", default=reaches, help="mm values of the change's reach to judge (0: none)")
    ap.add_argument("--reach-ps", default="1", help="S's probabilities that also anchor each reach (1: the mask alone)")
    ap.add_argument("--threads", type=int, default=1)


def maker_model(args) -> tuple:
    """(the model with S_t2's mask rule set from --rule or its own, that rule); torch's threads set."""
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    rule = mask_rule_of(model, args.rule)
    model.config[RECIPE_KEYS[T2_NET]].update(rule)
    return model, rule


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("--out")
    ap.add_argument("--cases", default="", help="only these case ids (comma-separated)")
    ap.add_argument("--summary", nargs="+", help="print the fold summary of these records and stop")
    ap.add_argument("--judges", default=None, help="cv_segmentor.py's folder: judge h by each case's fold S")
    ap.add_argument("--judge-recipe", default="mirror", help="the fold S's recipe (mirror or mirror+neg)")
    ap.add_argument("--judge-input", action="store_true", help="also the tumour the judge finds on the input itself")
    maker_options(ap, reaches=None, maker_recipe="mirror")
    args = ap.parse_args(argv)
    reaches = reaches_of(args.reaches, args.reach_ps)
    if args.summary:
        print(summary(args.summary))
        return 0
    model, rule = maker_model(args)
    record = {"model": args.model, "judges": args.judges, "judge_recipe": args.judge_recipe, "cases": {},
              "makers": args.makers, "maker_recipe": args.maker_recipe if args.makers else None, "rule": rule,
              "reaches": reaches}
    only = set(filter(None, args.cases.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        judges = fold_judges(args.judges, args.model, Path(tmp), args.judge_recipe) if args.judges else {}
        makers = fold_judges(args.makers, args.model, Path(tmp), args.maker_recipe, rule) if args.makers else {}
        for case in (c for c in find_cases(args.data_dir, require=True) if c.labeled and (not only or c.case_id in only)):
            for given, chosen in ((args.judges, judges), (args.makers, makers)):
                if given and case.case_id not in chosen:
                    raise SystemExit(f"{given}: no fold holds {case.case_id} out")
            record["cases"][case.case_id] = judge(makers.get(case.case_id, model), case, judges.get(case.case_id),
                                                  reaches, args.judge_input)
            print(case.case_id, record["cases"][case.case_id], flush=True)
            Path(args.out).write_text(json.dumps(record, indent=1))
    if not only:
        print(summary([args.out]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
