"""One case of the fill protocol (scripts/cv_fill.py's placed mask) filled by review mode, with
the engine as it is and with the gated G's `cover` (gated.COVER_RIM: the gate held open over the
given mask and its rim, commit 31b1170) left out: what that change did to the review fill
(docs/fill-cv.md, third stage). The through-plane pass is off in both (z_sigma 0).

    python scripts/review_cover_check.py DATA_DIR CASE_ID --cache-dir /tmp/fillcache [--model M]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cv_fill import placed_case  # noqa: E402

from smilecore import gated  # noqa: E402
from smilecore import inpainting_protocol as protocol  # noqa: E402
from smilecore.cases import find_cases  # noqa: E402
from smilecore.dataset import cache_case  # noqa: E402
from smilecore.modelfile import default_model_path, load_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir")
    ap.add_argument("case")
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = {c.case_id: c for c in find_cases(args.data_dir, require=True) if c.labeled}
    cached = {i: cache_case(c, args.cache_dir) for i, c in cases.items()}
    order = sorted(cached)
    truth, _, mask, _ = placed_case(cached[args.case], [cached[d] for d in order if d != args.case],
                                    order.index(args.case))
    given = protocol.voided(truth, mask)
    model = load_model(args.model or default_model_path())
    forward = gated.GatedGenerator.forward
    for name, fwd in (("as it is", forward), ("cover left out", lambda self, x, cover=None: forward(self, x, None))):
        gated.GatedGenerator.forward = fwd
        try:
            t0 = time.time()
            fill = protocol.review_fill(given, mask, model, cached[args.case].spacing, z_sigma=0)
        finally:
            gated.GatedGenerator.forward = forward
        s = protocol.score(fill, truth, given, mask)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()) + f" ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
