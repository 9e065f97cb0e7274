"""The `smile` command line: train, synthesize, demo, evaluate, benchmark, bench, info, make-cohort."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  smile demo                                   # bundled sample case + default model
  smile synthesize case_t2.nii.gz --out-dir out/
  smile synthesize case_t2.nii.gz --mask edited_lesion.nii.gz --out-dir out/
  smile train /data/BraTS2019 --out runs/smile50 --labeled-fraction 0.5
  smile train /data/BraTS2019 --out runs/smile50 --resume
  smile evaluate runs/smile50/smile-model.pt --data /data/BraTS2019
  smile benchmark /data/BraTS2019 --out bench/          # GVS, SMILE-sup/75/50, gated G, 2 seeds
"""


def _fractions(text: str) -> tuple:
    parts = tuple(float(p) for p in text.split(","))
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise argparse.ArgumentTypeError("expected three non-negative numbers: train,val,test")
    return parts


def _ints(text: str) -> tuple:
    return tuple(int(p) for p in text.split(","))


def _ids(text: str) -> tuple:
    return tuple(p for p in text.split(",") if p)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Appends an option's default to its help once: not when the help already names a default,
    not for flags, required options or None; tuples as "4,1,1,2"."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or action.required or default is None or default is argparse.SUPPRESS
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction))
                or action.nargs == 0 or default == ()):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def build_parser() -> argparse.ArgumentParser:
    from .train import LR_SCHEDULES, TrainConfig
    from .volume import NORMALISATIONS
    d = TrainConfig(data_dir="", out_dir="")
    p = argparse.ArgumentParser(prog="smile", description="SMILE: pseudo-normal synthesis, lesion "
                                "segmentation and lesion painting for brain MRI.",
                                epilog=EXAMPLES, formatter_class=_Formatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="phased semi-supervised training on a folder of BraTS cases",
                       formatter_class=_Formatter)
    t.add_argument("data_dir", help="folder of BraTS cases (2018-2020, 2021 or 2023+ naming)")
    t.add_argument("--out", required=True, help="run folder: checkpoint, events.jsonl, smile-model.pt, cache")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its own settings are used)")
    t.add_argument("--modality", default=d.modality, help="t2 (t2w), t1 (t1n), t1ce (t1c), flair (t2f)")
    t.add_argument("--variant", default=d.variant, choices=["smile", "gvs"],
                   help="smile: the four phases; gvs: phase 1 alone with all labels (the GVS comparison)")
    t.add_argument("--labeled-fraction", type=float, default=d.labeled_fraction,
                   help="share of training cases that keep their labels (SMILE-50: 0.5, SMILE-75: 0.75)")
    t.add_argument("--seed", type=int, default=d.seed, help="seed of the split, initialisation and data order")
    t.add_argument("--split", type=_fractions, default="0.502,0.402,0.097",
                   help="train,val,test proportions of the labelled cases (the paper's 130/104/25)")
    t.add_argument("--val-cases", type=_ids, default=(), help="comma-separated case ids forced into val")
    t.add_argument("--test-cases", type=_ids, default=(), help="comma-separated case ids held out for test")
    t.add_argument("--epochs", type=_ints, default=(d.epochs,),
                   help="epochs per phase: one number for all, or one per phase (e.g. 4,1,1,2)")
    t.add_argument("--steps-per-epoch", type=int, default=None,
                   help="optimisation steps per epoch (default: one pass over the training slices)")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help="slices per optimisation step")
    t.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    t.add_argument("--lr-schedule", default=d.lr_schedule, choices=LR_SCHEDULES,
                   help="learning rate over the run: constant, or a cosine decay to 0 at its last step")
    t.add_argument("--base", type=int, default=d.base, help="U-Net width of the first level (G, S, R)")
    t.add_argument("--depth", type=int, default=d.depth, help="number of U-Net down-samplings")
    t.add_argument("--norm", default=d.norm, choices=["batch", "none"],
                   help="U-Net normalisation (BatchNorm, or none)")
    t.add_argument("--upsample", default=d.upsample, choices=["transpose", "bilinear"],
                   help="U-Net up-sampling: transposed convolution (the original U-Net) or bilinear + 1x1 "
                        "convolution (no checkerboard in G's and R's outputs)")
    t.add_argument("--crop", type=int, default=None,
                   help="train on random crops of this size at full resolution (default: whole slices)")
    t.add_argument("--eps0", type=float, default=d.eps0, help="initial confidence threshold")
    t.add_argument("--min-brain-fraction", type=float, default=d.min_brain_fraction,
                   help="keep axial slices with at least this share of brain pixels")
    t.add_argument("--cache-dir", default=None, help="slice cache folder (default: <out>/cache)")
    t.add_argument("--device", default=d.device, help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1")
    t.add_argument("--no-amp", action="store_true", help="no bf16 mixed precision on GPU")
    t.add_argument("--num-workers", type=int, default=None, help="data loader workers (default 2 on GPU, 0 on CPU)")
    t.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (besides every epoch end)")
    t.add_argument("--generator", default=d.generator, choices=["unet", "gated"],
                   help="G's design: the paper's residual U-Net, or the gated G(I) = (1 - A) I + A C that changes "
                        "only where its gate A opens (smilecore/gated.py)")
    t.add_argument("--transplant-weight", type=float, default=None,
                   help="beyond the paper: weight of the paired lesion-removal term for G (0: the paper's losses "
                        "only; default: 1 with --generator gated, which also trains its gate with it, else 0)")
    t.add_argument("--transplant-lesion-weight", type=float, default=d.transplant_lesion_weight,
                   help="beyond the paper: weight of that term's error inside the pasted lesion alone "
                        "(needs --transplant-weight > 0)")
    t.add_argument("--normalisation", default=None, choices=NORMALISATIONS,
                   help="intensity scaling: the paper's 99.5th percentile of the brain, or its median (which a "
                        "tumour hardly moves: a brain with and without one is scaled alike); default: the "
                        "--init-from model's, else clip-percentile")
    t.add_argument("--init-from", default=None,
                   help="model file the networks start from (fine-tuning; with --generator gated and a file whose G "
                        "is the paper's, G starts from the file's S: gate = its lesion probability)")
    t.add_argument("--freeze", default=None, choices=["S", "R", "SR"],
                   help="networks kept as --init-from has them (e.g. S: train G against the file's segmentor)")
    t.add_argument("--gate-grow", type=int, default=d.gate_grow,
                   help="gated G: pixels its gate is grown by, so that it covers the lesion's rim")
    t.add_argument("--gate-floor", type=float, default=d.gate_floor,
                   help="gated G: gate values below it count as 0 (the input is kept exactly)")
    t.add_argument("--gate-weight", type=float, default=d.gate_weight,
                   help="gated G: weight of its gate's loss against the batch's lesion masks")
    t.add_argument("--gate-dice-weight", type=float, default=d.gate_dice_weight,
                   help="gated G: weight of a soft Dice of its gate on each pasted lesion (small lesions count "
                        "as much as large ones; needs the transplant term)")
    t.add_argument("--context-slices", type=int, default=None,
                   help="gated G: neighbouring axial slices it sees on each side (2.5D; 1: z-1, z, z+1); "
                        "default: the --init-from model's, else 0. A 2D G from --init-from starts with zero "
                        "weight on them")
    t.add_argument("--save-half", action="store_true", help="store model weights as float16")
    t.add_argument("--quiet", action="store_true", help="no progress bar (events still go to events.jsonl)")

    s = sub.add_parser("synthesize", help="pseudo-normal, lesion, pseudo-abnormal and difference for one volume",
                       formatter_class=_Formatter)
    s.add_argument("input", help="NIfTI image of the model's modality (skull-stripped)")
    s.add_argument("--model", default=None, help="SMILE model file (default: the bundled T2 model)")
    s.add_argument("--mask", default=None,
                   help="lesion mask NIfTI on the input's grid, used instead of S's (review/painting mode)")
    s.add_argument("--lesion-fill", default="smooth", choices=["smooth", "none"],
                   help="with --mask: what G gets, the input with the mask filled from the tissue around it "
                        "(smooth) or the input as it is (none, the method as published)")
    s.add_argument("--out-dir", required=True, help="folder for the NIfTI outputs and the PNG overview")
    s.add_argument("--brain-mask", default=None,
                   help="brain mask (NIfTI on the image's grid) for an image that is not skull-stripped: "
                        "the brain is taken from it, and voxels outside it are left unchanged")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda")
    s.add_argument("--batch-size", type=int, default=16,
                   help="slices per forward pass (halved automatically when memory runs out)")
    s.add_argument("--modality", default=None,
                   help="the input's modality (t2, t1, t1ce, flair); default: from a BraTS suffix of the "
                        "file name. Synthesis is refused when it is not the model's")

    m = sub.add_parser("demo", help="run the bundled default model on the bundled sample case",
                       formatter_class=_Formatter)
    m.add_argument("--out-dir", default="smile-demo", help="where to write the outputs")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda")

    e = sub.add_parser("evaluate", help="identity, healthiness, Dice and known-truth errors on test cases",
                       formatter_class=_Formatter)
    e.add_argument("model", help="SMILE model file")
    e.add_argument("--data", required=True, help="folder of BraTS cases")
    e.add_argument("--test-cases", type=_ids, default=None,
                   help="comma-separated test case ids (default: the test cases of the model's own split)")
    e.add_argument("--train-cases", type=_ids, default=None,
                   help="cases whose real labels train Spred (default: the training cases of the model's split)")
    e.add_argument("--spred-steps", type=int, default=600, help="training steps of the reference segmentor Spred")
    e.add_argument("--spred-base", type=int, default=16, help="width of Spred")
    e.add_argument("--transplants", type=int, default=32, help="lesions transplanted for the known-truth errors")
    e.add_argument("--transplants-from", choices=["other", "same", "both"], default="other",
                   help="where transplanted lesions come from: other labelled cases the evaluation loads (test, "
                        "--known-truth-cases, Spred's training cases, the split's validation cases), the host "
                        "case itself, or both")
    e.add_argument("--known-truth-cases", type=_ids, default=(),
                   help="comma-separated labelled cases that host transplanted lesions besides the test cases "
                        "(e.g. the validation cases)")
    e.add_argument("--cache-dir", default=None,
                   help="slice cache and cached Spred (default: $SMILE_CACHE, else $XDG_CACHE_HOME/smile, "
                        "else ~/.cache/smile)")
    e.add_argument("--seed", type=int, default=0, help="seed of Spred's training and of the transplanted lesions")
    e.add_argument("--report", "--out", dest="report", default=None, help="write the full report as JSON here")
    e.add_argument("--json", action="store_true", help="print the full report as JSON instead of the summary table")
    e.add_argument("--figure", default=None,
                   help="write a PNG of transplanted lesions: lesion | pseudo-normal | mask given | truth | mean fill")

    b = sub.add_parser("benchmark", help="GVS and SMILE variants on one split: Table 2/3 analogues, figures, seeds",
                       formatter_class=_Formatter)
    b.add_argument("data_dir", help="folder of BraTS cases")
    b.add_argument("--out", required=True, help="benchmark folder: runs, cache, benchmark.json/.md, PNG figures")
    b.add_argument("--quick", action="store_true",
                   help="tiny networks and budgets: the whole pipeline in minutes (for tests and trials)")
    b.add_argument("--variants", type=_ids, default=None,
                   help="comma-separated, from GVS, SMILE-sup, SMILE-75, SMILE-50, SMILE-sup+paired, "
                        "SMILE-sup+gated (the gated G started from SMILE-sup's S; needs SMILE-sup), "
                        "SMILE-sup+gated+2.5D (the same, seeing the slices above and below), SMILE-sup+median and "
                        "SMILE-sup+gated+median (both scaled by the brain's median) (default: all but "
                        "SMILE-sup+paired)")
    b.add_argument("--seeds", type=_ints, default=None, help="comma-separated seeds (default 0,1)")
    b.add_argument("--split-seed", type=int, default=0, help="seed of the one case split all runs share")
    b.add_argument("--split", type=_fractions, default="0.7,0.1,0.2", help="train,val,test proportions")
    b.add_argument("--val-cases", type=_ids, default=(), help="comma-separated case ids forced into val")
    b.add_argument("--test-cases", type=_ids, default=(), help="comma-separated case ids held out for test")
    b.add_argument("--modality", default="t2", help="t2 (t2w), t1 (t1n), t1ce (t1c), flair (t2f)")
    for name, kind, help_text in (("epochs", _ints, "epochs per phase (default 2,1,1,1)"),
                                  ("steps-per-epoch", int, "steps per epoch (default 60)"),
                                  ("batch-size", int, "batch size (default 8)"), ("lr", float, "learning rate (default 1e-3)"),
                                  ("base", int, "U-Net width (default 8)"), ("depth", int, "U-Net depth (default 4)"),
                                  ("crop", int, "training crop, 0 for whole slices (default 96)"),
                                  ("spred-steps", int, "steps of Spred and of each augmentation segmentor (default 600)"),
                                  ("spred-base", int, "width of Spred (default 16)"),
                                  ("transplants", int, "transplanted lesions for the known-truth errors (default 32)")):
        b.add_argument(f"--{name}", type=kind, default=None, help=help_text)
    b.add_argument("--no-augmentation", action="store_true", help="skip the Table 3 experiment")
    b.add_argument("--device", default="auto", help="auto, cpu, cuda")

    q = sub.add_parser("bench", help="speed of synthesis, training and preprocessing against the naive path",
                       formatter_class=_Formatter)
    q.add_argument("--volume", default=None, help="NIfTI volume to synthesise (default: the bundled sample case)")
    q.add_argument("--data", default=None,
                   help="folder of BraTS cases for training and preprocessing (default: the bundled sample case's folder)")
    q.add_argument("--sizes", type=_ids, default=("default", "paper"), help="network sizes: default, paper")
    q.add_argument("--steps", type=int, default=3, help="timed training steps per phase")
    q.add_argument("--batch-size", type=int, default=8, help="slices per timed synthesis and training step")
    q.add_argument("--no-naive", action="store_true", help="skip the naive path (no ratios)")
    q.add_argument("--no-training", action="store_true", help="synthesis only")
    q.add_argument("--quick", action="store_true",
                   help="the default networks only, one timed step per phase, batch 2 (a check that it all runs)")
    q.add_argument("--no-channels-last", action="store_true", help="NCHW tensors on CUDA (for comparison)")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda")
    q.add_argument("--out", default=None, help="write every number as JSON here")

    i = sub.add_parser("info", help="print a model file's configuration", formatter_class=_Formatter)
    i.add_argument("model", nargs="?", default=None, help="model file (default: the bundled one)")

    c = sub.add_parser("make-cohort", help="write a small procedural BraTS-named cohort (for tests and trials)",
                       formatter_class=_Formatter)
    c.add_argument("out_dir", help="folder to write the cases into (one sub-folder per case)")
    c.add_argument("--cases", type=int, default=6, help="number of cases")
    c.add_argument("--seed", type=int, default=0, help="seed of the procedural anatomy and lesions")
    c.add_argument("--size", type=int, nargs=3, default=(48, 48, 24), metavar=("X", "Y", "Z"),
                   help="volume size in voxels")
    c.add_argument("--unlabeled", type=int, default=0, help="how many of the cases get no segmentation")
    return p


_bars: list = []  # open progress bars, closed before an error is printed


def _progress(desc: str, unit: str = "slice"):
    """A (done, total) callback drawing a tqdm bar from its first update on (so an error found
    before any work is not printed after an empty bar)."""
    from tqdm import tqdm

    def update(done, total):
        if not _bars:
            _bars.append(tqdm(desc=desc, unit=unit, total=total, dynamic_ncols=True))
        bar = _bars[-1]
        bar.update(done - bar.n)
        if done >= total:
            _close_bars()
    return update


def _close_bars():
    while _bars:
        _bars.pop().close()   # ends the bar's line, so what follows starts on its own


def cmd_train(args) -> int:
    from .events import EventLog, ProgressBar
    from .train import CHECKPOINT_NAME, Trainer, TrainConfig
    out = Path(args.out)
    if args.resume:
        import torch
        ckpt = out / CHECKPOINT_NAME
        if not ckpt.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        saved = json.loads(torch.load(ckpt, map_location="cpu", weights_only=True)["config"])
        saved["split"] = tuple(saved["split"])
        saved["epochs"] = tuple(saved["epochs"]) if isinstance(saved["epochs"], list) else saved["epochs"]
        saved["val_cases"], saved["test_cases"] = tuple(saved["val_cases"]), tuple(saved["test_cases"])
        cfg = TrainConfig(**{**saved, "device": args.device, "data_dir": args.data_dir,
                             "num_workers": args.num_workers})
    else:
        cfg = TrainConfig(data_dir=args.data_dir, out_dir=str(out), modality=args.modality,
                          variant=args.variant, labeled_fraction=args.labeled_fraction, seed=args.seed,
                          split=args.split, val_cases=args.val_cases, test_cases=args.test_cases,
                          epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                          batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
                          base=args.base, depth=args.depth, norm=args.norm,
                          upsample=args.upsample, generator=args.generator,
                          crop=args.crop, eps0=args.eps0, min_brain_fraction=args.min_brain_fraction,
                          cache_dir=args.cache_dir, device=args.device, amp=not args.no_amp,
                          num_workers=args.num_workers, checkpoint_every=args.checkpoint_every,
                          save_half=args.save_half,
                          transplant_weight=(args.transplant_weight if args.transplant_weight is not None
                                             else float(args.generator == "gated")),
                          transplant_lesion_weight=args.transplant_lesion_weight, init_from=args.init_from,
                          freeze=args.freeze or "", gate_grow=args.gate_grow, gate_floor=args.gate_floor,
                          gate_weight=args.gate_weight, gate_dice_weight=args.gate_dice_weight,
                          normalisation=args.normalisation, context_slices=args.context_slices)
    from .cases import find_cases
    find_cases(cfg.data_dir, require=True)   # before the run folder is made: says where it looked
    out.mkdir(parents=True, exist_ok=True)
    import os
    from . import distributed
    main_process = int(os.environ.get("RANK", "0")) == 0   # under torchrun, process 0 reports
    events = (EventLog(out / "events.jsonl", None if args.quiet else ProgressBar()) if main_process
              else EventLog(None))
    try:
        model = Trainer(cfg, events).run(resume=args.resume)
    except BaseException as exc:
        events.emit("error" if not isinstance(exc, KeyboardInterrupt) else "stopped",
                    message=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        events.close()
        distributed.finish()
    if main_process:
        print(f"model written to {model}")
    return 0


def cmd_synthesize(args, input_path=None, model_path=None) -> int:
    from .modelfile import default_model_path, load_model
    from .synthesis import synthesize_file
    from .train import resolve_device
    model = load_model(model_path or args.model or default_model_path(), resolve_device(args.device))
    t0 = time.time()
    notify = lambda message: print(f"smile {args.command}: note: {message}", file=sys.stderr)  # noqa: E731
    written = synthesize_file(input_path or args.input, args.out_dir, model, getattr(args, "mask", None),
                              batch_size=getattr(args, "batch_size", 16), progress=_progress("synthesis"),
                              modality=getattr(args, "modality", None), notify=notify,
                              lesion_fill=getattr(args, "lesion_fill", "smooth"),
                              brain_mask=getattr(args, "brain_mask", None))
    print(f"synthesis took {time.time() - t0:.1f} s; wrote:")
    for name, path in written.items():
        print(f"  {name:20s} {path}")
    return 0


def cmd_demo(args) -> int:
    from . import metrics
    from .modelfile import default_model_path, resources_dir
    from .volume import load_nifti
    sample = resources_dir() / "sample"
    image = next(sample.glob("*_t2.nii.gz"), None)
    if image is None or not default_model_path().is_file():
        raise FileNotFoundError(f"bundled sample case or default model missing under {resources_dir()}")
    print(f"demo: {image.name} with {default_model_path().name}")
    cmd_synthesize(args, input_path=image, model_path=default_model_path())
    seg = next(sample.glob("*_seg.nii.gz"), None)
    if seg is not None:
        truth = load_nifti(seg, "segmentation")[0] > 0
        stem = image.name.replace(".nii.gz", "")
        pred = load_nifti(Path(args.out_dir) / f"{stem}_lesion_mask.nii.gz", "mask")[0] > 0
        dice = metrics.dice(pred, truth)
        print(f"Dice of the lesion mask against the expert segmentation (whole tumour): {dice:.3f}")
    return 0


def cmd_evaluate(args) -> int:
    from .cases import find_cases
    from .dataset import cache_case
    from .evaluate import SpredSettings, default_cache_dir, evaluate, train_spred, transplant_set
    from .gated import context_of
    from .modelfile import load_model
    from .files import write_text_atomic
    model = load_model(args.model)
    split = model.config.get("training", {}).get("split", {})
    test_ids = args.test_cases or tuple(split.get("test", ()))
    train_ids = args.train_cases or tuple(split.get("train", ()))
    if not test_ids or not train_ids:
        raise ValueError("name --test-cases and --train-cases (the model file records no split)")
    cases = {c.case_id: c for c in find_cases(args.data, require=True)}
    missing = [c for c in (*test_ids, *train_ids, *args.known_truth_cases) if c not in cases]
    if missing:
        raise ValueError(f"cases not found in {args.data}: {', '.join(missing)}")
    modality = model.modality
    cache_dir = args.cache_dir or default_cache_dir()
    norm = model.normalisation
    test = [cache_case(cases[c], cache_dir, modality, normalisation=norm) for c in test_ids]
    if any(not c.labeled for c in test):
        raise ValueError("every test case needs a segmentation")
    train = [cache_case(cases[c], cache_dir, modality, normalisation=norm) for c in train_ids if cases[c].labeled]
    spred = train_spred(train, SpredSettings(base=args.spred_base, steps=args.spred_steps, seed=args.seed),
                        cache_dir, progress=_progress("Spred training", "step"))
    # hosts: cases whose healthy slices are the truth; donors: every labelled case already loaded
    hosts = test + [cache_case(cases[c], cache_dir, modality, normalisation=norm)
                    for c in args.known_truth_cases if c not in test_ids]
    if any(not c.labeled for c in hosts):
        raise ValueError("every --known-truth-cases case needs a segmentation")
    loaded = {c.case_id for c in hosts + train}
    val = [cache_case(cases[c], cache_dir, modality, normalisation=norm) for c in split.get("val", ())
           if c in cases and cases[c].labeled and c not in loaded]
    transplants = transplant_set(hosts, args.transplants, args.seed, donors=hosts + train + val,
                                 pairing=args.transplants_from,
                                 context=context_of(model.nets["G"])) if args.transplants else None
    report = evaluate(model, test, spred, transplants)
    report.update(model=str(args.model), test_cases=list(test_ids), spred_train_cases=[c.case_id for c in train],
                  transplants_from=args.transplants_from)
    if args.figure and transplants is not None:
        from .evaluate import known_truth_figure
        report["figure"] = str(known_truth_figure(model.nets["G"], transplants, args.figure))
    text = json.dumps(report, indent=1)
    if args.report:
        write_text_atomic(args.report, text, "report")
    print(text if args.json else _evaluation_table(report))
    if args.report and not args.json:
        print(f"full report: {args.report}")
    return 0


_LESIONS_FROM = {"other": "lesions of other cases", "same": "each host's own lesions",
                 "both": "lesions of any case"}


def _evaluation_table(report: dict) -> str:
    """The report's headline numbers in at most 29 lines (the JSON has them all)."""
    f = lambda x: "  n/a" if x is None or x != x else f"{x:5.3f}"  # noqa: E731  (NaN: no lesion seen)
    pct = lambda x: "n/a" if x is None or x != x else f"{100 * x:.1f} %"  # noqa: E731
    lines = [f"{'case':24s} {'iD':>6s} {'h':>6s} {'Dice S':>7s}"]
    shown = 16  # leaves room for the known-truth and healthy-brain lines within 30
    for case in report["test_cases"][:shown]:
        ih = report.get("per_case", {}).get(case, {})
        lines.append(f"{case[:24]:24s} {f(ih.get('identity')):>6s} {f(ih.get('healthiness')):>6s} "
                     f"{f(report['dice_S_per_case'].get(case)):>7s}")
    if len(report["test_cases"]) > shown:
        lines.append(f"... {len(report['test_cases']) - shown} more cases in the JSON report")
    lines.append(f"{'pooled':24s} {f(report['identity']):>6s} {f(report['healthiness']):>6s} "
                 f"{f(report['dice_S']):>7s}   ({report['abnormal_slices']} abnormal slices)")
    oc = report.get("outside_lesion_changed")
    if oc:
        lines.append(f"G changes {pct(oc['pooled'])} of brain voxels more than {oc['limit']} away from the lesion "
                     f"(grown {oc['grow']} px); worst case {pct(max(oc['per_case'].values(), default=float('nan')))}")
    kt = report.get("known_truth")
    if kt:
        hosts = list(report.get("known_truth_per_case", {}))[:3]  # per-host PSNR columns, the JSON has all
        per = report.get("known_truth_per_case", {})
        lines.append(f"known truth inside {report['known_truth_slices']} transplanted lesions "
                     f"({_LESIONS_FROM[report.get('transplants_from', 'other')]}):  PSNR dB   SSIM"
                     + "".join(f" {h.split('_', 1)[-1][-12:]:>12s}" for h in hosts))  # without a "Brats18_" prefix
        for name in ("model", "model_mask_given", "untouched", "mean_fill", "smooth_fill", "best_constant"):
            lines.append(f"  {name:36s} {kt[name]['psnr']:7.2f}  {f(kt[name]['ssim'])}"
                         + "".join(f" {per[h][name]['psnr']:12.2f}" for h in hosts))
    hb = report.get("healthy_brain", {}).get("pooled")
    if hb:
        lines.append(f"healthy brain (tumour replaced by the mirrored side, {hb['slices']} slices): S calls "
                     f"{pct(hb['lesion_share_mean'])} of it lesion (worst case {pct(hb['lesion_share_worst'])})")
        lines.append(f"  G changes {pct(hb['changed_share'])} of its voxels by more than 0.01, "
                     f"mean |G(I) - I| {hb['mean_abs_change']:.4f}")
    return "\n".join(lines)


def cmd_benchmark(args) -> int:
    import dataclasses as dc
    from .benchmark import QUICK, Benchmark, BenchmarkSettings
    settings = BenchmarkSettings(data_dir=args.data_dir, out_dir=args.out, split_seed=args.split_seed,
                                 split=args.split, val_cases=args.val_cases, test_cases=args.test_cases,
                                 modality=args.modality, device=args.device, augment=not args.no_augmentation)
    if args.quick:
        settings = dc.replace(settings, **QUICK)
    given = {"variants": args.variants, "seeds": args.seeds, "epochs": args.epochs,
             "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size, "lr": args.lr,
             "base": args.base, "depth": args.depth, "transplants": args.transplants}
    settings = dc.replace(settings, **{k: v for k, v in given.items() if v is not None})
    if args.crop is not None:
        settings.crop = args.crop or None
    spred = {"steps": args.spred_steps, "base": args.spred_base}
    settings.spred = dc.replace(settings.spred, **{k: v for k, v in spred.items() if v is not None})
    if settings.augment and settings.augment_from not in settings.variants:
        settings.augment = False
        print(f"benchmark: {settings.augment_from} is not among the variants; no augmentation experiment")
    report = Benchmark(settings).run()
    out = Path(args.out)
    print((out / "benchmark.md").read_text())
    print(f"report: {out / 'benchmark.md'}, every number: {out / 'benchmark.json'}")
    return 0


def cmd_bench(args) -> int:
    from .modelfile import resources_dir
    from .speed import markdown, run_bench, save_report
    sample = resources_dir() / "sample"
    volume = Path(args.volume) if args.volume else next(sample.glob("*_t2.nii.gz"))
    sizes, steps, batch = (("default",), 1, 2) if args.quick else (args.sizes, args.steps, args.batch_size)
    report = run_bench(volume, Path(args.data) if args.data else sample, sizes, args.device, steps, batch,
                       naive=not args.no_naive, training=not args.no_training,
                       channels_last=not args.no_channels_last)
    if args.out:
        save_report(report, Path(args.out))
    print(markdown(report))
    return 0


def cmd_info(args) -> int:
    from .modelfile import default_model_path, load_model
    model = load_model(args.model or default_model_path())
    print(json.dumps(model.config, indent=1))
    return 0


def cmd_make_cohort(args) -> int:
    from .synthetic import write_cohort
    out = write_cohort(args.out_dir, args.cases, args.seed, tuple(args.size), unlabeled=args.unlabeled)
    print(f"wrote {args.cases} cases to {out}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` runs (temporary files and locks are
    removed); the default action would end the process on the spot."""


def _on_sigterm(signum, frame):
    raise Terminated("SIGTERM")


def _note_warnings(command: str):
    """SMILE's own warnings (skipped files, ...) as one `smile <command>: note:` line each."""
    import warnings
    from .cases import DataFolderWarning
    from .synthesis import SynthesisWarning
    shown, told = warnings.showwarning, set()

    def show(message, category, *args, **kwargs):
        if not issubclass(category, (DataFolderWarning, SynthesisWarning)):
            shown(message, category, *args, **kwargs)
        elif str(message) not in told:  # the data folder is searched more than once per command
            told.add(str(message))
            _close_bars()
            print(f"smile {command}: note: {message}", file=sys.stderr)
    warnings.showwarning = show


def main(argv=None) -> int:
    import os
    import signal
    import threading
    import warnings
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "synthesize": cmd_synthesize, "demo": cmd_demo, "info": cmd_info,
                "evaluate": cmd_evaluate, "benchmark": cmd_benchmark, "bench": cmd_bench,
                "make-cohort": cmd_make_cohort}
    from .modelfile import ModelFileError
    from .volume import VolumeError
    main_thread = threading.current_thread() is threading.main_thread()
    old_sigterm = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    old_showwarning = warnings.showwarning
    _note_warnings(args.command)
    try:
        return handlers[args.command](args)
    except BrokenPipeError:
        # the reader went away (`smile info | head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (VolumeError, ModelFileError, FileNotFoundError, ValueError, FloatingPointError,
            RuntimeError, OSError) as exc:
        _close_bars()
        print(f"smile {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        _close_bars()
        term = isinstance(exc, Terminated)
        print(f"smile {args.command}: {'terminated (SIGTERM)' if term else 'interrupted'}", file=sys.stderr)
        return 143 if term else 130
    finally:  # main() may run inside another program (tests): leave its settings as they were
        warnings.showwarning = old_showwarning
        if main_thread:
            signal.signal(signal.SIGTERM, old_sigterm)


if __name__ == "__main__":
    sys.exit(main())
