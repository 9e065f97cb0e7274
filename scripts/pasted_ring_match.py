"""Does the review mode's ring-mean shift (synthesis_fill.ring_matched) help without a mask too?
The no-mask known truth of pasted_tumour_cases.py, for the shipped default without the shift and
with it (synthesis_fill.RING_MATCH_WITHOUT_MASK, tried and left off; docs/pasted-truth.md); mean +-
SD over the 4 folds. The record's "as shipped" is the default without the shift (as it ships).

    OMP_NUM_THREADS=1 python scripts/pasted_ring_match.py ../shared/data/brats --out RECORD.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_segmentor import folds  # noqa: E402
from pasted_tumour_cases import pasted_host, synthesis_scores  # noqa: E402

from smilecore import synthesis_fill  # noqa: E402
from smilecore.cases import find_cases  # noqa: E402
from smilecore.dataset import cache_case  # noqa: E402
from smilecore.modelfile import default_model_path, load_model  # noqa: E402

VARIANTS = {"as shipped": False, "ring-matched": True}   # names as in the record of 2026-12-02


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(default_model_path())
    cases = {c.case_id: c for c in find_cases(args.data_dir, require=True) if c.labeled}
    cache = Path(tempfile.gettempdir()) / "smile-fill-cv-cache"
    cached = {i: cache_case(c, cache) for i, c in cases.items()}
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {}
    for cid in sorted(cached):
        if cid in record:
            continue
        host, record[cid] = pasted_host(cid, cases, cached), {}
        shipped = synthesis_fill.RING_MATCH_WITHOUT_MASK
        for name, switch in VARIANTS.items():
            synthesis_fill.RING_MATCH_WITHOUT_MASK = switch
            try:
                record[cid][name] = synthesis_scores(model, host)[0]
            finally:
                synthesis_fill.RING_MATCH_WITHOUT_MASK = shipped
        print(cid, {n: round(s["psnr"], 2) for n, s in record[cid].items()}, flush=True)
        out.write_text(json.dumps(record, indent=1))
    for name in VARIANTS:
        for key in ("psnr", "ssim", "intensity_ratio"):
            per_fold = [np.mean([record[c][name][key] for c in fold]) for fold in folds(sorted(record))]
            print(f"{name} {key}: {np.mean(per_fold):.3f} +- {np.std(per_fold):.3f} (folds {', '.join(f'{v:.3f}' for v in per_fold)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
