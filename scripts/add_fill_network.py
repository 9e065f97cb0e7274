"""Add a fill network (fillnet.FillNet, issue 24) to a copy of a SMILE model.

The fill network fills the lesion of the pseudo-normal in synthesis (the user's mask in review
mode, S's mask otherwise; synthesis_fill.py). It is trained self-supervised (fillnet.train_fillnet:
lesion-shaped holes voided in healthy tissue, L1 + SSIM) on the cases of the model's own training
split as its configuration records it, in the model's own scaling; the validation and held-out
test cases are not used. The recipe is the one docs/fill-cv.md cross-validated (smooth start,
U-Net base 8, depth 4, 4000 steps of 6 crops of 128 px, lr 1e-3 with a cosine, seed 0; seventh
stage). G, S, R (and S_flair) are copied unchanged; the file is written atomically and never over
the input model.

    python scripts/add_fill_network.py MODEL DATA_DIR --out NEW_MODEL [--steps 4000]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

from smilecore.dataset import cache_case
from smilecore.fillnet import train_fillnet
from smilecore.modelfile import load_model, save_model
from smilecore.networks import FILL_NET
from smilecore.provenance import file_record, folder_name, provenance

HERE = Path(__file__).resolve().parent


def _script(name: str):
    """scripts/NAME.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_cases(model, data_dir: str) -> list:
    """add_segmentor.py's: the labelled cases of the model's training split (a T2 and a label)."""
    return _script("add_segmentor").training_cases(model, data_dir, modalities=())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True, help="the new model file (never the input model)")
    _script("cv_fill").training_options(ap, steps=4000)   # the settings the cross-validation measured
    ap.add_argument("--through-plane-sigma", type=float, default=None,
                    help="the through-plane pass's sigma for this model (synthesis_blend.pass_sigma; "
                         "default: the engine's, as for G's fill)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=None, help="preprocessed slices")
    args = ap.parse_args(argv)
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise SystemExit("--out is the input model: write the model with the fill network to another file")
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cases = training_cases(model, args.data_dir)
    print(f"fill network on {len(cases)} training cases of {Path(args.model).name}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cached = [cache_case(c, Path(args.cache_dir or tmp), modality=model.config.get("modality", "t2"),
                             normalisation=model.normalisation) for c in cases]
        net, run = train_fillnet(cached, steps=args.steps, crop=args.crop, batch_size=args.batch_size,
                                 base=args.base, depth=args.depth, lr=args.lr, seed=args.seed, start="smooth",
                                 texture=args.texture, log=lambda msg: print(msg, flush=True))
    config = json.loads(json.dumps(model.config))
    config["networks"][FILL_NET] = dict(net.config)
    if args.through_plane_sigma is not None:
        config["through_plane_sigma"] = args.through_plane_sigma
    config["fill_network"] = {**run, "cases": [c.case_id for c in cases], "model": file_record(args.model),
                              "data_dir": folder_name(args.data_dir),
                              "provenance": provenance("scripts/add_fill_network.py",
                                                       sys.argv[1:] if argv is None else argv)}
    stored = torch.load(args.model, map_location="cpu", weights_only=True)
    half = any(v.dtype == torch.float16 for v in stored["S"].values())   # as the input model stores them
    save_model(args.out, {**model.nets, FILL_NET: net}, config, half=half)
    print(f"wrote {args.out}: {FILL_NET} trained {run['steps']} steps in {run['seconds']} s on {len(cases)} cases",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
