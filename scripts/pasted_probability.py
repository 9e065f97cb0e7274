"""What a fold's S_t2 sees of a pasted second tumour before synthesis's mask rule (docs/pasted-truth.md).

pasted_tumour_cases.py counts the pasted tumour in synthesis's lesion mask, after the threshold and
the component rule. This prints, per host, S_t2's probability inside the pasted mask and inside the
host's own tumour, so a miss can be told apart: S_t2 not seeing the tumour (low probability) or the
rule dropping what it saw (probability over 0.5, recall 0). Each host is run with the `--recipe`
segmentor of the cv_segmentor.py fold that held it out, with no component rule.

    python scripts/pasted_probability.py DATA_DIR CV_DIR --recipe mirror+opposite --cases H1,H2
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from healthiness_cases import fold_judges  # noqa: E402
from pasted_tumour_cases import labelled_cases, pasted_host  # noqa: E402

from smilecore.modelfile import default_model_path  # noqa: E402
from smilecore.synthesis import synthesize  # noqa: E402


def probabilities(model, host: dict) -> dict:
    """Mean probability and shares over 0.5 and 0.7 inside the pasted mask and the host's tumour."""
    p = synthesize(host["pasted"], host["affine"], model, notify=lambda m: None).lesion_probability
    return {name: {"mean": float(p[m].mean()), "over_0.5": float((p[m] > 0.5).mean()),
                   "over_0.7": float((p[m] > 0.7).mean())}
            for name, m in (("pasted", host["mask"]), ("own", host["tumour"]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("cv_dir")
    ap.add_argument("--recipe", default="mirror")
    ap.add_argument("--cases", required=True, help="hosts (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases, cached = labelled_cases(args.data_dir)
    makers = fold_judges(args.cv_dir, str(default_model_path()), Path(tempfile.mkdtemp()), args.recipe,
                         {"min_component_share": 0.0})
    for host_id in args.cases.split(","):
        found = probabilities(makers[host_id], pasted_host(host_id, cases, cached))
        print(f"{host_id} ({args.recipe}): " + "; ".join(
            f"{name}: mean p {v['mean']:.2f}, over 0.5 {v['over_0.5']:.2f}, over 0.7 {v['over_0.7']:.2f}"
            for name, v in found.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
