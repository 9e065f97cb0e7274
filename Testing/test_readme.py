"""The README's commands, run as written.

Every line of the README's ```bash blocks is either one of the two quick-start commands (checked
verbatim here and run by CI itself, .ci/run) or a `smile`/`torchrun` command that a test below
runs as a real subprocess, unchanged, in a fresh folder. A README command that changes is the
command that runs; one that no test knows fails test_every_readme_command_is_run.

The synthesis commands name the bundled sample by its path relative to the checkout; here they
run in a temporary folder where that path holds a slab of the sample (12 axial slices through the
tumour), and the review mask they name is the sample's expert label on that slab. The demo (the
whole volume) is marked slow.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SAMPLE = "smilecore/resources/sample/Brats18_TCIA02_370_1_t2.nii.gz"
QUICK_START = (
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e . && .venv/bin/smile demo',
    'python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 -e ".[test]" '
    '&& .venv/bin/python -m pytest Testing -n 2 --dist loadfile',
)
# what each README command is run by (the test of that name below)
RUNNERS = {
    "--help": "test_help_and_info",
    "info": "test_help_and_info",
    "synthesize": "test_synthesize_on_a_slab_of_the_sample",
    "demo": "test_demo",
    "make-cohort": "test_make_cohort_train_resume",
    "train": "test_make_cohort_train_resume",
    "evaluate": "test_evaluate",
    "benchmark": "test_benchmark_quick",
    "bench": "test_bench_quick",
    "torchrun": "test_torchrun",
}
TIMEOUT = 900


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def bash_lines() -> list[str]:
    """Every command line of the README's bash blocks: continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", readme_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(" ".join(line.split()) if not line.startswith("python3 ") else line)
    return lines


def key(line: str) -> str:
    words = shlex.split(line)
    if words[0] == "torchrun":
        return "torchrun"
    assert words[0] == "smile", f"README command of no known kind: {line}"
    return words[1]


def commands(*keys) -> list[str]:
    found = [line for line in bash_lines() if not line.startswith("python3 ") and key(line) in keys]
    assert found, f"the README shows no command for {keys}"
    return found


def run(line: str, cwd: Path, timeout=TIMEOUT, threads="1") -> subprocess.CompletedProcess:
    """A README command as a subprocess of this interpreter (the venv's smile). One torch thread
    unless asked (the tiny runs gain nothing from more, and spin on a busy machine)."""
    words = shlex.split(line)
    if words[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    else:
        argv = [sys.executable, "-m", "smilecore.cli", *words[1:]]
    env = {**os.environ, "SMILE_HOME": str(cwd / ".smile-home"), "SMILE_CACHE": str(cwd / ".smile-cache"),
           "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def output_names() -> list[str]:
    """The synthesis outputs the README's Outputs section names (NAME_... files)."""
    section = readme_text().split("## Outputs", 1)[1].split("\n## ", 1)[0]
    return sorted(set(re.findall(r"`NAME_(\w+?)(?:\.nii\.gz|\.png)?`", section)))


def check_synthesis_outputs(out: Path, stem="Brats18_TCIA02_370_1_t2"):
    names = output_names()
    assert {"pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal", "difference",
            "overview"} <= set(names), names
    for name in names:
        suffix = ".png" if name == "overview" else ".nii.gz"
        assert (out / f"{stem}_{name}{suffix}").is_file(), f"{out}: no {stem}_{name}{suffix}"


# ---- the README itself ----------------------------------------------------------------------

def test_readme_is_short_and_names_no_developer_paths():
    text = readme_text()
    assert len(text.splitlines()) <= 200
    assert "../shared" not in text
    assert SAMPLE in text
    assert (ROOT / "docs" / "images" / "overview.png").is_file() and "docs/images/overview.png" in text
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_quick_start_commands_are_verbatim_and_ci_runs_the_test_command():
    lines = bash_lines()
    for command in QUICK_START:
        assert command in lines, f"quick start changed: {command}"
    assert [line for line in lines if line.startswith("python3 ")] == list(QUICK_START)
    assert QUICK_START[1] in (ROOT / ".ci" / "run").read_text()


def test_every_readme_command_is_run():
    shown = {key(line) for line in bash_lines() if not line.startswith("python3 ")}
    unknown = shown - set(RUNNERS)
    assert not unknown, f"README commands no test runs: {unknown}"
    for cli_command in ("demo", "synthesize", "train", "evaluate", "benchmark", "bench", "info",
                        "make-cohort", "torchrun"):
        assert cli_command in shown, f"the README shows no example of {cli_command}"
    for name in set(RUNNERS.values()):
        assert callable(globals()[name])


# ---- the commands ---------------------------------------------------------------------------

def test_help_and_info(tmp_path):
    for line in commands("--help", "info"):
        r = run(line, tmp_path, timeout=300)
        assert r.stdout.strip()
    assert list(p for p in tmp_path.iterdir() if not p.name.startswith(".")) == []


@pytest.fixture(scope="module")
def sample_slab(tmp_path_factory) -> Path:
    """A folder where the README's sample path holds 12 axial slices of the sample through its
    tumour, and smile-demo/ the expert lesion on them as the review mask."""
    import nibabel as nib
    import numpy as np
    work = tmp_path_factory.mktemp("readme-synthesis")
    image = nib.load(ROOT / SAMPLE)
    seg = nib.load(ROOT / SAMPLE.replace("_t2.nii.gz", "_seg.nii.gz"))
    (work / SAMPLE).parent.mkdir(parents=True)
    nib.save(image.slicer[:, :, 66:78], work / SAMPLE)
    mask = seg.slicer[:, :, 66:78]
    (work / "smile-demo").mkdir()
    nib.save(nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.uint8), mask.affine),
             work / "smile-demo" / "Brats18_TCIA02_370_1_t2_lesion_mask.nii.gz")
    return work


def test_synthesize_on_a_slab_of_the_sample(sample_slab):
    lines = commands("synthesize")
    assert all(SAMPLE in line for line in lines)
    for line in lines:
        run(line, sample_slab)
        stem = "Brats18_TCIA02_370_1_t2" + ("_reviewed" if "--mask" in line else "")  # review mode's names
        check_synthesis_outputs(sample_slab / shlex.split(line)[shlex.split(line).index("--out-dir") + 1], stem)


@pytest.mark.slow
def test_demo(tmp_path):
    (line,) = commands("demo")
    r = run(line, tmp_path, threads=None)
    # the default model's Dice on the held-out sample was measured when it was trained
    # (docs/training.md); this floor, well below it, catches a broken or swapped model file
    assert float(re.search(r"whole tumour\): ([0-9.]+)", r.stdout).group(1)) > 0.5, r.stdout
    out = shlex.split(line)[shlex.split(line).index("--out-dir") + 1]
    check_synthesis_outputs(tmp_path / out)


@pytest.fixture(scope="module")
def trial(tmp_path_factory) -> Path:
    """The README's make-cohort and first train command, run once for the tests that follow it."""
    work = tmp_path_factory.mktemp("readme-trial")
    (cohort,) = commands("make-cohort")
    run(cohort, work, timeout=300)
    train = [line for line in commands("train") if "--resume" not in line]
    assert len(train) == 1
    run(train[0], work)
    return work


def test_make_cohort_train_resume(trial):
    run_dir = trial / "trial-run"
    for name in ("smile-model.pt", "checkpoint.pt", "events.jsonl", "split.json"):
        assert f"RUN/{name}" in readme_text() and (run_dir / name).is_file(), name
    (resume,) = [line for line in commands("train") if "--resume" in line]
    run(resume, trial)
    assert (run_dir / "smile-model.pt").is_file()


@pytest.mark.slow
@pytest.mark.readme_duplicate
def test_evaluate(trial):
    (line,) = commands("evaluate")
    r = run(line, trial)
    assert r.stdout.splitlines()[0].split()[:2] == ["case", "iD"]


@pytest.mark.slow
@pytest.mark.readme_duplicate
def test_benchmark_quick(trial):
    (line,) = commands("benchmark")
    assert "--quick" in line
    run(line, trial)
    out = trial / shlex.split(line)[shlex.split(line).index("--out") + 1]
    assert (out / "benchmark.md").is_file() and (out / "benchmark.json").is_file()


@pytest.mark.slow
@pytest.mark.readme_duplicate
def test_bench_quick(trial):
    (line,) = commands("bench")
    assert "--quick" in line
    assert "speedup" in run(line, trial).stdout


@pytest.mark.slow
@pytest.mark.readme_duplicate
def test_torchrun(trial):
    (line,) = commands("torchrun")
    run(line, trial)
    out = trial / shlex.split(line)[shlex.split(line).index("--out") + 1]
    assert (out / "smile-model.pt").is_file()
