"""The `smile` command line: train, synthesize, demo, evaluate, benchmark, bench, info, make-cohort.

What each command does (`cmd_train`, ...) and `main`, which runs one with SMILE's errors, warnings
and signals turned into one line each; the options and their help are cli_parser.py's.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .cli_parser import build_parser, unknown_options, unrecognized

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


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of `folder` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for f in (folder, *folder.parents):
        if f.exists():
            return missing
        missing = f
    return missing


def _remove_created(folder: Path, created: Path | None) -> None:
    """Remove `folder` and its parents up to `created`, the ones this run made, while empty: a
    refused run leaves no empty output folder behind (never a folder that was there before)."""
    if created is None:
        return
    for f in (folder, *folder.parents):
        try:
            f.rmdir()
        except OSError:
            return
        if f == created:
            return


def cmd_synthesize(args, input_path=None, model_path=None) -> int:
    out_dir = Path(args.out_dir)
    created = _first_missing(out_dir.absolute())
    try:
        return _synthesize(args, input_path, model_path)
    except BaseException:
        _remove_created(out_dir.absolute(), created)
        raise


def _synthesize(args, input_path=None, model_path=None) -> int:
    from .modelfile import default_model_path, load_model
    from .precision import fit_threads
    from .synthesis import synthesize_file
    from .train import resolve_device
    fit_threads()   # a container's CPU quota, not the host's cores
    model = load_model(model_path or args.model or default_model_path(), resolve_device(args.device))
    t0 = time.time()
    notify = lambda message: print(f"smile {args.command}: note: {message}", file=sys.stderr)  # noqa: E731
    written = synthesize_file(input_path or args.input, args.out_dir, model, getattr(args, "mask", None),
                              batch_size=getattr(args, "batch_size", 16), progress=_progress("synthesis"),
                              modality=getattr(args, "modality", None), notify=notify,
                              lesion_fill=getattr(args, "lesion_fill", "smooth"),
                              brain_mask=getattr(args, "brain_mask", None),
                              precision=getattr(args, "precision", "auto"), flair_path=getattr(args, "flair", None))
    print(f"synthesis took {time.time() - t0:.1f} s; wrote:")
    for name, path in written.items():
        print(f"  {name:20s} {path}")
    return 0


def demo_inputs(with_flair: bool = False) -> tuple[Path, Path | None]:
    """The bundled sample case's T2, and its FLAIR when asked for."""
    from .modelfile import default_model_path, resources_dir
    sample = resources_dir() / "sample"
    image = next(sample.glob("*_t2.nii.gz"), None)
    flair = next(sample.glob("*_flair.nii.gz"), None)
    if image is None or not default_model_path().is_file() or (with_flair and flair is None):
        raise FileNotFoundError(f"bundled sample case or default model missing under {resources_dir()}")
    return image, flair if with_flair else None


def cmd_demo(args) -> int:
    from . import metrics
    from .modelfile import default_model_path
    from .volume import load_nifti
    image, args.flair = demo_inputs(args.with_flair)
    sample = image.parent
    print(f"demo: {image.name}{' and ' + args.flair.name if args.flair else ''} with {default_model_path().name}")
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
    from .evaluate import SpredSettings, default_cache_dir, evaluate, through_synthesis, train_spred, transplant_set
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
    _check_evaluation_cases(args, cases, test_ids, train_ids)
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
    report["synthesis"] = through_synthesis(model, [cases[c] for c in test_ids], modality,
                                            progress=_progress("Synthesis of the test cases", "case"))
    report.update(model=str(args.model), test_cases=list(test_ids), spred_train_cases=[c.case_id for c in train],
                  transplants_from=args.transplants_from)
    if args.figure and transplants is not None:
        from .evaluate import known_truth_figure
        report["figure"] = str(known_truth_figure(model.nets["G"], transplants, args.figure, S=model.nets["S"]))
    text = json.dumps(report, indent=1)
    if args.report:
        write_text_atomic(args.report, text, "report")
    print(text if args.json else _evaluation_table(report))
    if args.report and not args.json:
        print(f"full report: {args.report}")
    return 0


def _check_evaluation_cases(args, cases: dict, test_ids, train_ids) -> None:
    """Every case evaluate needs is in --data; else one line saying what it needs and what is there
    (the bundled sample is one case, the default model's test case: not enough on its own)."""
    missing = {role: [c for c in ids if c not in cases] for role, ids in
               (("test", test_ids), ("training", train_ids), ("known-truth", args.known_truth_cases))}
    if not any(missing.values()):
        return
    shown = lambda ids: ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")  # noqa: E731
    lacking = "; ".join(f"{len(ids)} {role} case{'s' if len(ids) > 1 else ''} ({shown(ids)})"
                        for role, ids in missing.items() if ids)
    here = sorted(cases)
    raise ValueError(f"cases not found in {args.data}: {lacking}. smile evaluate needs the model's test cases (each "
                     "with its segmentation) and its training cases (to train Spred, the reference segmentor): give "
                     "the BraTS folder the model was trained on, or name cases of this folder with --test-cases and "
                     f"--train-cases (it holds {len(here)} case{'s' if len(here) != 1 else ''}: {shown(here)})")


_LESIONS_FROM = {"other": "lesions of other cases", "same": "each host's own lesions",
                 "both": "lesions of any case"}


def _evaluation_table(report: dict) -> str:
    """The report's headline numbers in at most 29 lines (the JSON has them all)."""
    f = lambda x: "  n/a" if x is None or x != x else f"{x:5.3f}"  # noqa: E731  (NaN: no lesion seen)
    pct = lambda x: "n/a" if x is None or x != x else f"{100 * x:.1f} %"  # noqa: E731
    syn = report.get("synthesis", {"per_case": {}})
    lines = [f"{'case':24s} {'iD':>6s} {'h':>6s} {'Dice S':>7s} {'Dice synthesis':>14s}"]
    shown = 14  # leaves room for the synthesis, known-truth, normal-anatomy and healthy-brain lines within 30
    for case in report["test_cases"][:shown]:
        ih = report.get("per_case", {}).get(case, {})
        lines.append(f"{case[:24]:24s} {f(ih.get('identity')):>6s} {f(ih.get('healthiness')):>6s} "
                     f"{f(report['dice_S_per_case'].get(case)):>7s} {f(syn['per_case'].get(case, {}).get('dice')):>14s}")
    if len(report["test_cases"]) > shown:
        lines.append(f"... {len(report['test_cases']) - shown} more cases in the JSON report")
    lines.append(f"{'pooled':24s} {f(report['identity']):>6s} {f(report['healthiness']):>6s} "
                 f"{f(report['dice_S']):>7s} {f(syn.get('dice')):>14s}   ({report['abnormal_slices']} abnormal slices)")
    if syn["per_case"]:   # what a user gets: smile synthesize on each test case's file
        segmentors = sorted({e["segmentor"] for e in syn["per_case"].values()})
        lines.append(f"synthesis ({', '.join(segmentors)} found the lesion) changes brain more than {syn['far_grow']} px "
                     f"from it by > 1 % in {pct(max(e['far_changed'] for e in syn['per_case'].values()))} of voxels "
                     "(worst case)")
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
    na = report.get("normal_anatomy_called_lesion")
    if na:  # issue 23: what S would make the pseudo-normal erase
        lines.append(f"normal anatomy S calls lesion: bright tissue (CSF) {pct(na['bright_tissue']['mean'])} "
                     f"(worst {pct(na['bright_tissue']['worst'])}), healthy-ised brain "
                     f"{pct(na['healthy_ised']['mean'])} (worst {pct(na['healthy_ised']['worst'])})")
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
    Benchmark(settings).run()
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
                       channels_last=not args.no_channels_last, precisions=tuple(args.precisions))
    if args.out:
        save_report(report, Path(args.out))
    print(markdown(report))
    return 0


def cmd_info(args) -> int:
    from .modelfile import default_model_path, load_model
    from .modelsummary import model_summary
    path = args.model or default_model_path()
    model = load_model(path)
    print(json.dumps(model.config, indent=1) if args.json else model_summary(Path(path).name, model.config))
    return 0


def cmd_make_cohort(args) -> int:
    from .synthetic import write_cohort
    out = write_cohort(args.out_dir, args.cases, args.seed, tuple(args.size), unlabeled=args.unlabeled)
    print(f"wrote {args.cases} cases to {out}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a closed terminal, a dropped ssh connection), raised like Ctrl-C so that
    every `finally` runs (temporary files and locks are removed); the default action would end
    the process on the spot."""


def _on_sigterm(signum, frame):
    import signal
    raise Terminated("SIGHUP" if signum == getattr(signal, "SIGHUP", None) else "SIGTERM")


_EXIT_CODES = {"SIGTERM": 143, "SIGHUP": 129}


def _note_warnings(command: str):
    """SMILE's own warnings (skipped files, ...) as one `smile <command>: note:` line each."""
    import warnings
    from .cases import DataFolderWarning
    from .inputchecks import InputWarning
    from .synthesis import SynthesisWarning
    shown, told = warnings.showwarning, set()

    def show(message, category, *args, **kwargs):
        if not issubclass(category, (DataFolderWarning, SynthesisWarning, InputWarning)):
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
    parser = build_parser()
    command, unknown = unknown_options(parser, argv)
    if unknown:
        return unrecognized(parser, command, unknown)
    args, extra = parser.parse_known_args(argv)
    if extra:
        return unrecognized(parser, args.command, extra)
    handlers = {"train": cmd_train, "synthesize": cmd_synthesize, "demo": cmd_demo, "info": cmd_info,
                "evaluate": cmd_evaluate, "benchmark": cmd_benchmark, "bench": cmd_bench,
                "make-cohort": cmd_make_cohort}
    from .modelfile import ModelFileError
    from .volume import VolumeError
    main_thread = threading.current_thread() is threading.main_thread()
    caught = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    old_handlers = {s: signal.signal(s, _on_sigterm) for s in caught} if main_thread else {}
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
        name = str(exc) if isinstance(exc, Terminated) else ""
        try:  # after SIGHUP the terminal may be gone
            print(f"smile {args.command}: {f'terminated ({name})' if name else 'interrupted'}", file=sys.stderr)
        except OSError:
            pass
        return _EXIT_CODES.get(name, 130)
    finally:  # main() may run inside another program (tests): leave its settings as they were
        warnings.showwarning = old_showwarning
        for s, old in old_handlers.items():
            signal.signal(s, old)


if __name__ == "__main__":
    sys.exit(main())
