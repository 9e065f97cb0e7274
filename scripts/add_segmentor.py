"""Add a recipe segmentor to a copy of a SMILE model: S_flair (issue 23, item 3) or S_t2 (item 2).

The segmentor is trained with one of scripts/cv_segmentor.py's recipes (its functions, imported
from that file): "mirror+flair" makes S_flair (T2 and FLAIR with both mirrored left-right as four
channels), "mirror" makes S_t2 (the T2 and its mirror); both with median scaling per modality,
cv_segmentor's augmentation, and cross-entropy on random crops half of them centred on tumour. It
trains on the labelled cases of the model's own training split as its configuration records it
("train"); the validation and held-out test cases are not used, and a test case among them is
refused. G, S and R (and any other network) are copied unchanged; the new file gets the
segmentor's weights and its recipe ("flair_segmentor" or "t2_segmentor"; smilecore/flair.py and
smilecore/synthesis.py say what synthesis does with them) and is written atomically. The input
model is never changed (an --out equal to it is refused).

    python scripts/add_segmentor.py MODEL DATA_DIR --out NEW_MODEL [--recipe mirror] [--steps 1000]

On the 2-core CPU cv_segmentor's mirror+flair fold 0 took 2502 s for 1000 steps (nine training
cases, beside other work).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.modelfile import RECIPE_KEYS, load_model, recipe_channels, save_model, segmentor_recipe
from smilecore.networks import FLAIR_NET, T2_NET, RecipeSegmentor
from smilecore.provenance import file_record, folder_name, provenance

ROLES = {"mirror+flair": FLAIR_NET, "mirror": T2_NET, "mirror+opposite": T2_NET}   # cv_segmentor's recipe -> the segmentor it makes
HERE = Path(__file__).resolve().parent


def cv_segmentor():
    """scripts/cv_segmentor.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("cv_segmentor", HERE / "cv_segmentor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_cases(model, data_dir: str, modalities=("flair",)) -> list:
    """The labelled cases of the model's training split, each with a T2, a label and `modalities`."""
    split = model.config.get("training", {}).get("split", {})
    ids = list(split.get("train", ()))
    if not ids:
        raise SystemExit(f"model file {model.path}: its configuration records no training split")
    held_out = set(split.get("test", ())) | set(split.get("val", ()))
    if held_out & set(ids):
        raise SystemExit(f"model file {model.path}: cases {sorted(held_out & set(ids))} are both training and held out")
    cases = {c.case_id: c for c in find_cases(data_dir, require=True)}
    missing = [i for i in ids if i not in cases]
    if missing:
        raise SystemExit(f"{data_dir}: the model's training cases {missing} are not there")
    unusable = [i for i in ids if not cases[i].labeled or any(m not in cases[i].images for m in modalities)]
    if unusable:
        wanted = "a label" + "".join(f" or a {m}" for m in modalities)
        raise SystemExit(f"{data_dir}: training cases without {wanted}: {unusable}")
    return [cases[i] for i in ids]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True, help="the new model file (never the input model)")
    cv = cv_segmentor()
    ap.add_argument("--recipe", choices=sorted(ROLES), default="mirror+flair",
                    help="mirror+flair: S_flair (T2 and FLAIR); mirror, mirror+opposite: S_t2 (the T2 alone)")
    ap.add_argument("--min-component-share", type=float, default=None,
                    help="synthesis drops the lesion mask's 3D components under this share of the largest "
                         "(the recipe's min_component_share; cross-validated for S_t2: 0.1)")
    ap.add_argument("--lesion-threshold", type=float, default=None,
                    help="the probability above which the segmentor's voxels are lesion (the recipe's "
                         "lesion_threshold; else the model's, 0.5)")
    cv.training_options(ap, steps=1000, crop=96)   # the settings the cross-validation measured
    args = ap.parse_args(argv)
    role = ROLES[args.recipe]
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise SystemExit(f"--out is the input model: write the model with {role} to another file")
    torch.set_num_threads(args.threads)
    recipe = cv.RECIPES[args.recipe]
    model = load_model(args.model)
    cases = training_cases(model, args.data_dir, modalities=cv.modalities(recipe)[1:])
    print(f"{args.recipe} on {len(cases)} training cases of {Path(args.model).name}: {[c.case_id for c in cases]}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or tmp)
        cached = [[cache_case(c, cache, modality=m, normalisation=recipe["normalisation"])
                   for m in cv.modalities(recipe)] for c in cases]
        t0 = time.time()
        S = cv.train_S(cached, recipe, args, lambda msg: print(msg, flush=True))
        seconds = round(time.time() - t0)
    entry = segmentor_recipe(cv.modalities(recipe), recipe["mirror"], recipe["normalisation"], training={
        "recipe": args.recipe, "cases": [c.case_id for c in cases], "steps": args.steps, "batch_size": args.batch_size,
        "crop": args.crop, "lr": args.lr, "seed": args.seed, "seconds": seconds,
        "model": file_record(args.model), "data_dir": folder_name(args.data_dir),
        "provenance": provenance("scripts/add_segmentor.py", sys.argv[1:] if argv is None else argv)})
    if args.min_component_share is not None:
        entry["min_component_share"] = args.min_component_share
    if args.lesion_threshold is not None:
        entry["lesion_threshold"] = args.lesion_threshold
    sizes = {"in_ch": recipe_channels(entry), "base": args.base, "depth": args.depth, "norm": "batch"}
    net = RecipeSegmentor(**sizes)
    net.unet.load_state_dict(S.state_dict())   # cv_segmentor trains the bare U-Net
    config = json.loads(json.dumps(model.config))
    config["networks"][role] = sizes
    config[RECIPE_KEYS[role]] = entry
    stored = torch.load(args.model, map_location="cpu", weights_only=True)
    half = any(v.dtype == torch.float16 for v in stored["S"].values())   # as the input model stores them
    save_model(args.out, {**model.nets, role: net.eval()}, config, half=half)
    print(f"wrote {args.out}: {role} ({sizes['in_ch']} channels) trained {args.steps} steps in {seconds} s "
          f"on {len(cases)} cases; the other networks as in {Path(args.model).name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
