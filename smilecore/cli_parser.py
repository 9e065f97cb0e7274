"""The `smile` command line's parser: every command's options, help text and defaults.

One function per command adds its sub-parser (`_add_train_parser`, ...); `build_parser` puts them
together. What each command does is cli.py's (`cmd_train`, ...).
"""
from __future__ import annotations

import argparse
import re
import sys

EXAMPLES = """examples:
  smile demo                                   # bundled sample case + default model
  smile synthesize case_t2.nii.gz --out-dir out/
  smile synthesize case_t2.nii.gz --mask edited_lesion.nii.gz --out-dir out/
  smile synthesize case_t2.nii.gz --flair case_flair.nii.gz --model with-flair.pt --out-dir out/
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, not {value}")
    return value


DEVICES = "auto, cpu, cuda, cuda:N (a GPU's index, e.g. cuda:1) or mps"


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; choose {DEVICES}")


class _Parser(argparse.ArgumentParser):
    """Usage errors as the README promises: one line, `smile <command>: error: ...`, exit 1."""

    def error(self, message):
        print(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(1)


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
    from . import __version__
    p = _Parser(prog="smile", description="SMILE: pseudo-normal synthesis, lesion "
                                "segmentation and lesion painting for brain MRI.",
                                epilog=EXAMPLES, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"smile {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_train_parser, _add_synthesize_parser, _add_demo_parser, _add_evaluate_parser,
                _add_benchmark_parser, _add_bench_parser, _add_info_parser, _add_make_cohort_parser):
        add(sub)
    return p


def _commands(parser) -> dict:
    return next(a for a in parser._actions if a.dest == "command").choices


def unknown_options(parser, argv) -> tuple:
    """(command, the `--options` it does not have, nor as an abbreviation), found before argparse
    parses, so that a mistyped option is named rather than a required one said to be missing."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    sub = _commands(parser).get(command)
    if sub is None:
        return command, []
    rest = argv[argv.index(command) + 1:]
    rest = rest[:rest.index("--")] if "--" in rest else rest
    known = [o for a in sub._actions for o in a.option_strings]
    return command, [a for a in rest if a.startswith("--") and not any(o.startswith(a.split("=")[0]) for o in known)]


def unrecognized(parser, command: str, extra: list) -> int:
    """Options the command does not have, in one line, with the nearest real option named."""
    import difflib
    known = [o for a in _commands(parser)[command]._actions for o in a.option_strings]
    hints = [f"{x} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(x.split("=")[0], known, 1, 0.6)) else x
             for x in extra]
    print(f"smile {command}: error: unrecognized arguments: {' '.join(hints)} (see smile {command} --help)",
          file=sys.stderr)
    return 1


def _add_train_parser(sub) -> None:
    """smile train: phased semi-supervised training (defaults: TrainConfig's)."""
    from .train_config import LR_SCHEDULES, TrainConfig
    d = TrainConfig(data_dir="", out_dir="")
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
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="slices per optimisation step")
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
    t.add_argument("--device", type=_device, default=d.device, help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1")
    t.add_argument("--no-amp", action="store_true", help="no bf16 mixed precision on GPU")
    t.add_argument("--num-workers", type=int, default=None, help="data loader workers (default 2 on GPU, 0 on CPU)")
    t.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (besides every epoch end)")
    _add_generator_options(t, d)
    t.add_argument("--save-half", action="store_true", help="store model weights as float16")
    t.add_argument("--quiet", action="store_true", help="no progress bar (events still go to events.jsonl)")


def _add_generator_options(t, d) -> None:
    """smile train's options for G's design, its extra losses and fine-tuning."""
    from .volume import NORMALISATIONS
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


def _add_synthesize_parser(sub) -> None:
    """smile synthesize: one volume."""
    s = sub.add_parser("synthesize", help="pseudo-normal, lesion, pseudo-abnormal and difference for one volume",
                       formatter_class=_Formatter)
    s.add_argument("input", help="NIfTI image of the model's modality (skull-stripped)")
    s.add_argument("--model", default=None, help="SMILE model file (default: the bundled T2 model)")
    s.add_argument("--mask", default=None,
                   help="lesion mask NIfTI on the input's grid, used instead of S's (review/painting mode)")
    s.add_argument("--lesion-fill", default="smooth", choices=["smooth", "none"],
                   help="with --mask: what G gets, the input with the mask filled from the tissue around it "
                        "(smooth) or the input as it is (none, the method as published)")
    s.add_argument("--flair", default=None,
                   help="FLAIR NIfTI of the same head (any grid: resampled onto the input's): the lesion is found by "
                        "the model's FLAIR segmentor, which sees both; G stays on the input. Needs a model with one "
                        "(smile info says)")
    s.add_argument("--out-dir", required=True, help="folder for the NIfTI outputs and the PNG overview")
    s.add_argument("--brain-mask", default=None,
                   help="brain mask (NIfTI on the image's grid) for an image that is not skull-stripped: "
                        "the brain is taken from it, and voxels outside it are left unchanged")
    s.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda")
    s.add_argument("--batch-size", type=_positive_int, default=16,
                   help="slices per forward pass (halved automatically when memory runs out)")
    _add_precision_option(s)
    s.add_argument("--modality", default=None,
                   help="the input's modality (t2, t1, t1ce, flair); default: from a BraTS suffix of the "
                        "file name. Synthesis is refused when it is not the model's")


def _add_precision_option(parser) -> None:
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="the networks' arithmetic: auto is bf16 autocast on CUDA and on CPUs with native bf16 "
                             "(AMX, AVX512-BF16), fp32 elsewhere (bf16 without native support is many times slower)")


def _add_demo_parser(sub) -> None:
    """smile demo: the bundled model on the bundled case."""
    m = sub.add_parser("demo", help="run the bundled default model on the bundled sample case",
                       formatter_class=_Formatter)
    m.add_argument("--out-dir", default="smile-demo", help="where to write the outputs")
    m.add_argument("--with-flair", action="store_true",
                   help="also give the sample case's FLAIR to the default model's FLAIR segmentor (S_flair)")
    m.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda")
    _add_precision_option(m)


def _add_evaluate_parser(sub) -> None:
    """smile evaluate: a model on test cases."""
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


def _add_benchmark_parser(sub) -> None:
    """smile benchmark: GVS and SMILE variants on one split."""
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
                                  ("batch-size", _positive_int, "batch size (default 8)"), ("lr", float, "learning rate (default 1e-3)"),
                                  ("base", int, "U-Net width (default 8)"), ("depth", int, "U-Net depth (default 4)"),
                                  ("crop", int, "training crop, 0 for whole slices (default 96)"),
                                  ("spred-steps", int, "steps of Spred and of each augmentation segmentor (default 600)"),
                                  ("spred-base", int, "width of Spred (default 16)"),
                                  ("transplants", int, "transplanted lesions for the known-truth errors (default 32)")):
        b.add_argument(f"--{name}", type=kind, default=None, help=help_text)
    b.add_argument("--no-augmentation", action="store_true", help="skip the Table 3 experiment")
    b.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda")


def _add_bench_parser(sub) -> None:
    """smile bench: speed against the naive path."""
    q = sub.add_parser("bench", help="speed of synthesis, training and preprocessing against the naive path",
                       formatter_class=_Formatter)
    q.add_argument("--volume", default=None, help="NIfTI volume to synthesise (default: the bundled sample case)")
    q.add_argument("--data", default=None,
                   help="folder of BraTS cases for training and preprocessing (default: the bundled sample case's folder)")
    q.add_argument("--sizes", type=_ids, default=("default", "paper"), help="network sizes: default, paper")
    q.add_argument("--steps", type=int, default=3, help="timed training steps per phase")
    q.add_argument("--batch-size", type=_positive_int, default=8, help="slices per timed synthesis and training step")
    q.add_argument("--no-naive", action="store_true", help="skip the naive path (no ratios)")
    q.add_argument("--no-training", action="store_true", help="synthesis only")
    q.add_argument("--quick", action="store_true",
                   help="the default networks only, one timed step per phase, batch 2 (a check that it all runs)")
    q.add_argument("--no-channels-last", action="store_true", help="NCHW tensors on CUDA (for comparison)")
    q.add_argument("--precisions", type=_ids, default=("fp32", "bf16"),
                   help="synthesis timed in each of these (fp32, bf16, auto), side by side, with the largest "
                        "difference in the brain from the first")
    q.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda")
    q.add_argument("--out", default=None, help="write every number as JSON here")


def _add_info_parser(sub) -> None:
    """smile info: a model file's configuration."""
    i = sub.add_parser("info", help="summarise a model file (its whole configuration with --json)", formatter_class=_Formatter)
    i.add_argument("model", nargs="?", default=None, help="model file (default: the bundled one)")
    i.add_argument("--json", action="store_true", help="print the whole configuration as JSON (the summary "
                   "gives only file names of the paths it records)")


def _add_make_cohort_parser(sub) -> None:
    """smile make-cohort: a procedural cohort."""
    c = sub.add_parser("make-cohort", help="write a small procedural BraTS-named cohort (for tests and trials)",
                       formatter_class=_Formatter)
    c.add_argument("out_dir", help="folder to write the cases into (one sub-folder per case)")
    c.add_argument("--cases", type=int, default=6, help="number of cases")
    c.add_argument("--seed", type=int, default=0, help="seed of the procedural anatomy and lesions")
    c.add_argument("--size", type=int, nargs=3, default=(48, 48, 24), metavar=("X", "Y", "Z"),
                   help="volume size in voxels")
    c.add_argument("--unlabeled", type=int, default=0, help="how many of the cases get no segmentation")
