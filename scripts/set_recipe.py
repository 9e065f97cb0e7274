"""Write a copy of a model file with keys of a recipe segmentor's recipe, or of the model's own
configuration, set (its weights unchanged).

What synthesis keeps of a segmentor's mask is data in the recipe ("lesion_threshold",
"min_component_share"; synthesis_segmentor.mask_rule), chosen by cross-validation after the
segmentor was trained (scripts/cv_postprocess.py). This sets them without retraining: the file's
weights are copied byte for byte, only its configuration changes, and the copy must load.

    python scripts/set_recipe.py MODEL --role S_t2 --set lesion_threshold=0.6 --set min_component_share=0.2 \
        --out NEW_MODEL

`--role model` sets keys of the configuration itself, for example the through-plane pass's sigma
(synthesis_blend.pass_sigma): `--role model --set through_plane_sigma=0`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from smilecore.modelfile import RECIPE_KEYS, atomic_torch_save, load_model


MODEL_ROLE = "model"   # --role for the configuration's own keys


def set_recipe(model: Path, role: str, values: dict, out: Path) -> dict:
    blob = torch.load(model, map_location="cpu", weights_only=True)
    config = json.loads(blob["config"])
    target = config
    if role != MODEL_ROLE:
        key = RECIPE_KEYS[role]
        if key not in config:
            raise SystemExit(f"{model}: no {role} recipe ({key}) to set")
        target = config[key]
    target.update(values)
    blob["config"] = json.dumps(config)
    checked = out.with_name(out.name + ".checking")
    atomic_torch_save(blob, checked)
    try:
        load_model(checked)   # refused (ModelFileError) if the values are not ones synthesis accepts
    except Exception:
        checked.unlink()      # a file already at `out` is kept
        raise
    checked.replace(out)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--role", choices=sorted(RECIPE_KEYS) + [MODEL_ROLE], default="S_t2")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=NUMBER")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    values = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    recipe = set_recipe(Path(args.model), args.role, values, Path(args.out))
    print(f"{args.out}: {RECIPE_KEYS.get(args.role, 'configuration')} " + json.dumps({k: recipe[k] for k in values}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
