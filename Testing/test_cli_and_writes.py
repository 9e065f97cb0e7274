"""Interrupted and concurrent runs (real signals to a real `smile synthesize`), stale temporary
files and locks, data folders as they come (macOS `._*` files, the HGG/LGG release layout), and
the command line's messages, help, broken pipe and evaluation output (docs/BAD_INPUTS.md)."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from smilecore import synthesis
from smilecore.cases import DataFolderWarning, NoCasesFound, find_cases
from smilecore.cli import build_parser, main as cli_main
from smilecore.files import LOCK_NAME, folder_lock, temp_name, write_text_atomic
from smilecore.modelfile import atomic_torch_save, model_config, save_model
from smilecore.networks import build_networks
from smilecore.synthesis import synthesize_file
from smilecore.synthetic import LPS, make_case, write_cohort
from smilecore.train import MODEL_NAME

ROOT = Path(__file__).resolve().parents[1]
SIZES = {n: {"base": 4, "depth": 3, "norm": "batch"} for n in "GSR"}
OUTPUTS = ("pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal", "difference")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "t2-model.pt"
    return save_model(path, build_networks(SIZES), model_config(SIZES, "t2"))


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory):
    """A small brain in a large volume of negative noise (background, so synthesis stays quick):
    every output is a large file that compresses slowly, so a signal reliably lands while the
    outputs are being written."""
    rng = np.random.default_rng(0)
    image, _, _ = make_case(rng, (24, 24, 8), n_lesions=1)
    data = -rng.random((160, 160, 96)).astype(np.float32)
    data[:24, :24, :8] = np.where(image > 0, image, data[:24, :24, :8])
    path = tmp_path_factory.mktemp("input") / "big_t2.nii"
    nib.save(nib.Nifti1Image(data, LPS), path)
    return path


def _smile(*args, **kwargs):
    return [sys.executable, "-m", "smilecore.cli", *map(str, args)]


def _hidden(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def _earlier_outputs(out):
    """Stand-ins for an earlier run's outputs, recognisable byte for byte."""
    out.mkdir()
    for name in OUTPUTS:
        (out / f"big_t2_{name}.nii.gz").write_bytes(f"earlier {name}".encode())


def _default_ctrl_c():
    # a shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and children inherit
    # that: the run under test gets Ctrl-C's default, as from a terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_a_temporary(args, out, timeout=120):
    proc = subprocess.Popen(_smile(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=_default_ctrl_c if os.name == "posix" else None)
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if any(".tmp" in name for name in _hidden(out)):
            return proc
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"no temporary file appeared in {out} while the run wrote: {proc.communicate()}")


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_outputs_are_written_leaves_no_temporary_and_the_earlier_outputs(
        sig, code, word, model_path, slow_input, tmp_path):
    out = tmp_path / "out"
    _earlier_outputs(out)
    proc = _start_and_wait_for_a_temporary(["synthesize", slow_input, "--model", model_path, "--out-dir", out], out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"smile synthesize: {word}" and "Traceback" not in err
    assert _hidden(out) == []                                  # no temporary file, no lock
    for name in OUTPUTS:                                       # the earlier outputs, untouched
        assert (out / f"big_t2_{name}.nii.gz").read_bytes() == f"earlier {name}".encode()


def test_after_sigkill_the_next_run_removes_the_stale_temporary_and_lock(model_path, slow_input, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = _start_and_wait_for_a_temporary(["synthesize", slow_input, "--model", model_path, "--out-dir", out], out)
    proc.kill()
    proc.communicate(timeout=60)
    left = _hidden(out)
    assert LOCK_NAME in left and any(f".tmp{proc.pid}" in n for n in left), left  # nothing can clean after -9
    live = temp_name(out / "other_t2_pseudo_normal.nii.gz")   # a live process's temporary (ours) is kept
    live.write_bytes(b"in progress")
    r = subprocess.run(_smile("synthesize", slow_input, "--model", model_path, "--out-dir", out),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert _hidden(out) == [live.name]
    for name in OUTPUTS:
        assert nib.load(out / f"big_t2_{name}.nii.gz").shape == (160, 160, 96)


def test_a_second_run_into_the_same_folder_is_refused(model_path, slow_input, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first = subprocess.Popen(_smile("synthesize", slow_input, "--model", model_path, "--out-dir", out),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    end = time.time() + 120
    while first.poll() is None and time.time() < end:   # until the lock holds the first run's pid
        try:
            if (out / LOCK_NAME).read_text().strip():
                break
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)   # hold the first run inside its work while the second starts
    try:
        second = subprocess.run(_smile("synthesize", slow_input, "--model", model_path, "--out-dir", out),
                                capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"smile synthesize: error: output folder {out} is in use by another smile run (pid {first.pid}); "
        "wait for it to end, or choose another folder"]
    assert _hidden(out) == [] and len(list(out.glob("big_t2_*.nii.gz"))) == 5


def test_a_lock_of_a_dead_process_is_taken_over_and_a_live_one_refuses(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid}\n")
    with folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(OSError, match=f"in use by another smile run \\(pid {os.getpid()}\\)"):
            with folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_replacing_earlier_outputs_is_noted(model_path, tmp_path):
    image, _, _ = make_case(np.random.default_rng(0), (24, 24, 8), n_lesions=1)
    path = tmp_path / "case_t2.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), LPS), path)
    notes = []
    synthesize_file(path, tmp_path / "out", synthesis.load_model(model_path), notify=notes.append)
    assert notes == []
    synthesize_file(path, tmp_path / "out", synthesis.load_model(model_path), notify=notes.append)
    assert notes == [f"replaced 6 earlier outputs in {tmp_path / 'out'} (case_t2_pseudo_normal.nii.gz, "
                     "case_t2_lesion_probability.nii.gz, ...)"]


def test_model_and_text_writes_remove_stale_temporaries_and_leave_none_when_interrupted(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".smile-model.pt.tmp{dead.pid}.pt"
    stale.write_bytes(b"half a model")
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "smile-model.pt")
    write_text_atomic(tmp_path / "report.json", "{}")
    assert _hidden(tmp_path) == []
    real_save = torch.save

    def interrupted_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise KeyboardInterrupt  # Ctrl-C, or SIGTERM through the CLI's handler, after the temporary exists
    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": torch.zeros(2)}, tmp_path / "smile-model.pt")
    assert _hidden(tmp_path) == []
    assert torch.load(tmp_path / "smile-model.pt", weights_only=True)["a"].sum() == 2   # the earlier file


# ---- data folders as they come ------------------------------------------------------------
def _release_layout(tmp_path):
    """The BraTS release layout DATA/HGG/<case>/, DATA/LGG/<case>/, with what macOS and people
    leave beside the cases: AppleDouble `._*` files, a hidden folder, a CSV sheet."""
    cohort = write_cohort(tmp_path / "cohort", n_cases=4, seed=2, shape=(24, 24, 8))
    data = tmp_path / "DATA"
    for i, case in enumerate(sorted(cohort.iterdir())):
        grade = data / ("HGG" if i < 3 else "LGG")
        grade.mkdir(parents=True, exist_ok=True)
        case.rename(grade / case.name)
        (grade / case.name / f"._{case.name}_t2.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (data / ".Trashes").mkdir()
    (data / "survival_data.csv").write_text("id,age\n")
    return data


def test_cases_are_found_at_any_depth_and_skipped_files_are_noted(tmp_path):
    data = _release_layout(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = find_cases(data, require=True)
    assert [c.case_id for c in cases] == ["Synth_000", "Synth_001", "Synth_002", "Synth_003"]
    assert all(c.labeled and c.images["t2"].parent.parent.name in ("HGG", "LGG") for c in cases)
    (note,) = [str(w.message) for w in caught if w.category is DataFolderWarning]
    assert note == (f"data folder {data}: skipped 5 hidden (.Trashes/, ._Synth_000_t2.nii.gz, "
                    "._Synth_001_t2.nii.gz, ...); 1 not NIfTI (survival_data.csv)")
    empty = tmp_path / "empty"
    (empty / "a" / "b").mkdir(parents=True)
    with pytest.raises(NoCasesFound, match=r"empty: no BraTS cases found in it or in the 2 folders below it "
                                           r"\(searched every depth, 2 levels here"):
        find_cases(empty, require=True)
    (data / "copy").mkdir()
    (data / "copy" / "Synth_000_t2.nii.gz").write_bytes((data / "HGG" / "Synth_000" / "Synth_000_t2.nii.gz").read_bytes())
    with pytest.raises(FileExistsError, match="case Synth_000 has two t2 files"):
        find_cases(data)


def test_cli_train_on_the_release_layout_with_appledouble_files(tmp_path, capsys):
    data = _release_layout(tmp_path)
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--quiet", "--split", "0.6,0.2,0.2",
            "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2", "--base", "4", "--depth", "2"]
    assert cli_main(args) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("smile train: note: ")]
    assert len(notes) == 1 and "._Synth_000_t2.nii.gz" in notes[0], err
    assert (tmp_path / "run" / MODEL_NAME).is_file()
    (tmp_path / "none").mkdir()
    assert cli_main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "run2")]) == 1
    assert capsys.readouterr().err.startswith("smile train: error: data folder ")
    assert not (tmp_path / "run2").exists()


# ---- the command line's messages -----------------------------------------------------------
def test_errors_are_one_line_of_their_own_even_after_a_progress_bar(model_path, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "notes_t2.nii.gz"
    bad.write_text("not an image")
    r = subprocess.run(_smile("synthesize", bad, "--model", model_path, "--out-dir", tmp_path / "o"),
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"smile synthesize: error: image {bad}: cannot be read as NIfTI "
                                     f"(ImageFileError: File {bad} is not a gzip file)"]
    image, _, _ = make_case(np.random.default_rng(0), (24, 24, 12), n_lesions=1)
    good = tmp_path / "case_t2.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), LPS), good)
    real, calls = synthesis._run_batch, []

    def fails_on_the_second_batch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a device error")
        return real(*a, **k)
    monkeypatch.setattr(synthesis, "_run_batch", fails_on_the_second_batch)
    args = ["synthesize", str(good), "--model", str(model_path), "--out-dir", str(tmp_path / "o2"), "--batch-size", "2"]
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "slice" in err.split("smile synthesize: error:")[0]            # a bar was drawn first ...
    assert "\nsmile synthesize: error: a device error\n" in err            # ... and the error has its own line
    assert err.count("smile synthesize: error:") == 1 and err.endswith("a device error\n")


def _option_helps():
    parser = build_parser()
    subs = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in subs.items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.dest != "help":
                yield name, action, formatter._get_help_string(action)


def test_every_option_has_help_and_one_readable_default(capsys):
    for command, action, text in _option_helps():
        where = (command, action.option_strings or action.dest)
        assert action.help, where
        assert text.count("default") <= 1 and "(default: None)" not in text and "(default: (" not in text, (where, text)
    helps = {(c, a.dest): t for c, a, t in _option_helps()}
    assert helps[("train", "epochs")].endswith("(default: 10)")
    assert helps[("make-cohort", "size")].endswith("(default: 48,48,24)")
    assert "default" not in helps[("synthesize", "out_dir")]
    from smilecore.cli import main   # the printed help, in this process (test_readme runs `smile --help`)
    with pytest.raises(SystemExit):
        main(["synthesize", "--help"])
    out = capsys.readouterr().out
    assert "--brain-mask" in out and "voxels outside it are left unchanged" in " ".join(out.split())


def test_help_does_not_import_torch():
    """`smile --help` and `smile train --help` (whose defaults come from TrainConfig) answer without
    loading torch, which takes seconds; a fresh interpreter, since this one has torch already."""
    code = ("import sys\nfrom smilecore.cli import main\nfor argv in (['--help'], ['train', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\nprint('torch' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "--gate-floor" in r.stdout and "(default: 0.02)" in r.stdout, r.stdout[-500:]
    assert r.stderr.strip().splitlines()[-1] == "False", r.stderr[-500:]


def test_a_closed_pipe_ends_quietly_and_a_non_model_file_is_one_line(model_path, tmp_path):
    proc = subprocess.Popen(_smile("info", model_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()                        # the reader is gone before smile writes (`| head`)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b""
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    r = subprocess.run(_smile("info", text), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"smile info: error: model file {text}: not a SMILE model file (not a PyTorch file)"]


@pytest.mark.slow
def test_cli_evaluate_prints_a_short_table_and_caches_in_the_user_cache(trained_run, cohort, tmp_path, capsys,
                                                                      monkeypatch):
    env = {**os.environ, "SMILE_CACHE": str(tmp_path / "user-cache")}
    args = _smile("evaluate", trained_run / MODEL_NAME, "--data", cohort, "--spred-steps", "5", "--spred-base", "4",
                  "--transplants", "4", "--report", tmp_path / "report.json")
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(lines) <= 30 and lines[0].split() == ["case", "iD", "h", "Dice", "S", "Dice", "synthesis"]
    for case in report["test_cases"]:
        (row,) = [line for line in lines if line.startswith(case)]
        assert row.split()[-2:] == [f"{report['dice_S_per_case'][case]:5.3f}",
                                    f"{report['synthesis']['per_case'][case]['dice']:5.3f}"]
    (pooled,) = [line for line in lines if line.startswith("pooled")]
    assert f"{report['identity']:5.3f}" in pooled and f"{report['dice_S']:5.3f}" in pooled
    assert f"{report['synthesis']['dice']:5.3f}" in pooled
    assert any(line.split()[:2] == ["mean_fill", f"{report['known_truth']['mean_fill']['psnr']:.2f}"] for line in lines)
    (anatomy,) = [line for line in lines if line.startswith("normal anatomy S calls lesion")]
    na = report["normal_anatomy_called_lesion"]
    assert f"bright tissue (CSF) {100 * na['bright_tissue']['mean']:.1f} %" in anatomy
    assert f"healthy-ised brain {100 * na['healthy_ised']['mean']:.1f} %" in anatomy
    assert list(work.iterdir()) == [] and any((tmp_path / "user-cache").glob("spred-*.pt"))
    # --json: the same command's code in this process (one `smile` process above is enough), same cache and folder
    from smilecore.cli import main
    monkeypatch.setenv("SMILE_CACHE", env["SMILE_CACHE"])
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main([*args[3:-2], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["identity"] == report["identity"]
