"""Choose among training runs without the validation or held-out cases: known truth on the
training cases.

Usage: python scripts/known_truth_on_training_cases.py DATA_DIR MODEL [MODEL ...] [--n 64] [--cache-dir D]

Lesions of the models' training cases pasted into normal slices of other training cases
(evaluate.transplant_set, pairing "other", seed 0; as lesion volumes, so a 2.5D G sees them in
its neighbouring slices too), and for each model the PSNR/SSIM without a mask inside the pasted
lesions, next to the mean fill, which is told the mask. The models must share one split and
one normalisation. The networks have seen these cases and these lesions, so the figure is not a
result to report as quality: it ranks runs of the same design (seeds, continuations) by a
measure that leaves the cases `smile evaluate` reports on untouched.
"""
import argparse


from smilecore import metrics
from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.evaluate import default_cache_dir, mean_fill, pseudo_normal, transplant_set
from smilecore.gated import context_of
from smilecore.modelfile import load_model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir")
    p.add_argument("models", nargs="+")
    p.add_argument("--n", type=int, default=64, help="lesions to paste (default 64)")
    p.add_argument("--cache-dir", default=None, help="slice cache (default: smile evaluate's)")
    args = p.parse_args()
    models = [load_model(m) for m in args.models]
    splits = {tuple(m.config["training"].get("split", {}).get("train", ())) for m in models}
    norms = {m.normalisation for m in models}
    if len(splits) != 1 or not next(iter(splits)) or len(norms) != 1:
        raise SystemExit("the models must record one and the same training split and normalisation")
    found = {c.case_id: c for c in find_cases(args.data_dir, require=True)}
    train = [cache_case(found[c], args.cache_dir or default_cache_dir(), models[0].modality,
                        normalisation=models[0].normalisation) for c in next(iter(splits)) if found[c].labeled]
    k = max(context_of(m.nets["G"]) for m in models)
    t = transplant_set(train, args.n, 0, donors=train, pairing="other", context=k)
    ref = metrics.known_truth_errors(mean_fill(t.image, t.lesion), t.truth, t.lesion)
    print(f"{len(t.image)} lesions pasted into {len({s[0] for s in t.source})} training cases; "
          f"mean fill (told the mask) {ref['psnr']:.2f} dB / {ref['ssim']:.3f}")
    for path, model in zip(args.models, models):
        G = model.nets["G"].eval()
        pn = pseudo_normal(G, t.G_input(context_of(G))[0], S=model.nets["S"].eval())  # as synthesis: open over S's mask
        r = metrics.known_truth_errors(pn, t.truth, t.lesion)
        print(f"{path}: no mask {r['psnr']:.2f} dB / {r['ssim']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
