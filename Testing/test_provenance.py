"""Model files record where they came from without the paths of the machine that made them:
the start model by name and hash, the data folder by name, the command with absolute paths
reduced to base names, the source's git commit (smilecore/provenance.py)."""
import hashlib
import json
import re
import sys
from pathlib import Path

import torch

import smilecore
from smilecore.provenance import provenance, source_commit, without_machine_paths
from smilecore.train import Trainer

from conftest import tiny_config
from script_helpers import script_module

REPO = Path(__file__).resolve().parents[1]


def _config_text(path: Path) -> str:
    return torch.load(path, map_location="cpu", weights_only=True)["config"]


def _machine_paths(*extra) -> list[str]:
    return [str(p) for p in (Path.home(), REPO, Path.cwd(), *extra)]


def test_a_model_file_names_its_start_data_and_command_without_machine_paths(cohort, tmp_path, monkeypatch):
    first = Trainer(tiny_config(cohort, tmp_path / "first", variant="gvs", labeled_fraction=1.0, epochs=1,
                                steps_per_epoch=2, base=4, depth=2)).run()
    # as `smile train` started with absolute paths would have it
    monkeypatch.setattr(sys, "argv", [str(REPO / ".venv" / "bin" / "smile"), "train", str(cohort),
                                      "--out", str(tmp_path / "second"), f"--init-from={first}", "--epochs", "1"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None, raising=False)
    second = Trainer(tiny_config(cohort, tmp_path / "second", variant="gvs", labeled_fraction=1.0, epochs=1,
                                 steps_per_epoch=2, base=4, depth=2, init_from=str(first))).run()
    text = _config_text(second)
    for path in _machine_paths(tmp_path, cohort):
        assert path not in text, f"{path} in the model file"
    training = json.loads(text)["training"]
    assert training["init_from"] == {"file": first.name, "sha256": hashlib.sha256(first.read_bytes()).hexdigest()}
    assert training["data_dir"] == cohort.name
    origin = training["provenance"]
    assert origin["script"] == "smile"
    assert origin["arguments"] == ["train", cohort.name, "--out", "second", f"--init-from={first.name}", "--epochs", "1"]
    assert origin["smilecore_version"] == smilecore.__version__
    assert origin["commit"] is None or re.fullmatch("[0-9a-f]{40}", origin["commit"])
    assert json.loads(_config_text(first))["training"]["init_from"] is None


def test_the_segmentor_finetune_script_records_the_same_way(cohort, tmp_path):
    start = Trainer(tiny_config(cohort, tmp_path / "run", labeled_fraction=1.0, epochs=1, steps_per_epoch=2,
                                base=4, depth=2)).run()
    script = script_module("finetune_segmentor")
    out = tmp_path / "tuned.pt"
    assert script.main([str(start), str(cohort), "--out", str(out), "--steps", "1", "--batch-size", "2",
                        "--crop", "32", "--check-every", "1", "--cache-dir", str(tmp_path / "cache")]) == 0
    text = _config_text(out)
    for path in _machine_paths(tmp_path, cohort):
        assert path not in text, f"{path} in the model file"
    record = json.loads(text)["training"]["segmentor_resolution_finetune"]
    assert record["model"] == {"file": start.name, "sha256": hashlib.sha256(start.read_bytes()).hexdigest()}
    assert record["data_dir"] == cohort.name and record["provenance"]["script"] == "scripts/finetune_segmentor.py"
    assert record["provenance"]["arguments"][:4] == [start.name, cohort.name, "--out", out.name]


def test_absolute_paths_in_arguments_become_base_names():
    assert without_machine_paths("/data/brats/") == "brats"
    assert without_machine_paths("--out=/home/me/runs/a") == "--out=a"
    assert without_machine_paths("~/model.pt") == "model.pt"
    assert without_machine_paths("runs/default") == "runs/default"       # relative: as typed
    assert without_machine_paths("--lr") == "--lr"
    assert provenance("x", ["/abs/file.pt", "3"])["arguments"] == ["file.pt", "3"]


def test_the_commit_is_none_outside_a_checkout_and_never_fails(tmp_path, monkeypatch):
    package = tmp_path / "smilecore"
    package.mkdir()
    assert source_commit(package) == (None, None)          # not in a git checkout
    commit, _ = source_commit()
    assert commit is None or re.fullmatch("[0-9a-f]{40}", commit)
    monkeypatch.setenv("PATH", str(tmp_path))               # no git program at all
    assert source_commit() == (None, None)
    assert provenance("x", [])["commit"] is None
