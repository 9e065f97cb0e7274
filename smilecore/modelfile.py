"""SMILE model files: G, S and R weights plus everything needed to use them, in one file.

The file is a plain `torch.save` of a dict holding only tensors, strings and numbers, and is
read with ``torch.load(weights_only=True)``: unpickling any other object (a payload that
would run code) is refused by torch before it is built. Layout:

    {"format": "smile-model", "format_version": 1,
     "config": <JSON string: networks, modality, normalisation, orientation, training summary>,
     "G": state_dict, "S": state_dict, "R": state_dict}

Weights may be stored in float16 to keep shipped files small; they are loaded as float32.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .files import temporary_beside, write_failed
from .networks import build_networks
from .volume import MEDIAN_LEVEL

FORMAT = "smile-model"
FORMAT_VERSION = 1


class ModelFileError(ValueError):
    """A file that is not a usable SMILE model; the message names the file and the problem."""


@dataclass
class SmileModel:
    nets: dict[str, torch.nn.Module]
    config: dict
    path: Path | None = None

    @property
    def modality(self) -> str:
        return self.config["modality"]

    @property
    def normalisation(self) -> str:
        """How volumes are scaled for this model (volume.NORMALISATIONS; files before it: the paper's)."""
        return self.config.get("normalisation", {}).get("method", "clip-percentile")

    def to(self, device) -> "SmileModel":
        for net in self.nets.values():
            net.to(device)
        return self


def model_config(sizes: dict, modality: str, training: dict | None = None,
                 clip_percentile: float = 99.5, spacing_mm=(1.0, 1.0, 1.0),
                 normalisation: str = "clip-percentile") -> dict:
    """`spacing_mm`: the voxel size (canonical L, P, S) of the training data; synthesis resamples
    slices to its in-plane part. Files without it were trained on BraTS's 1 mm."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "smilecore_version": __version__,
        "networks": sizes,
        "modality": modality,
        "normalisation": {"method": normalisation, "clip_percentile": clip_percentile,
                          **({"median_level": MEDIAN_LEVEL} if normalisation == "median" else {}),
                          "range": [0.0, 1.0], "offset": "background level",
                          "brain": "above the background noise, largest connected part (volume.find_brain)"},
        "spacing_mm": [float(v) for v in spacing_mm],
        "orientation": {"canonical": "LPS", "slice_axis": 2, "slices": "axial"},
        "lesion_threshold": 0.5,
        "training": training or {},
    }


def atomic_torch_save(obj, path: str | Path) -> Path:
    """torch.save to a temporary name in the same folder, then rename: a kill or a full disk
    never leaves a damaged file under the real name, and no temporary file is left (see
    files.temporary_beside)."""
    path = Path(path)
    with temporary_beside(path) as tmp:
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
            raise write_failed(path, exc) from exc
    return path


def save_model(path: str | Path, nets: dict[str, torch.nn.Module], config: dict,
               half: bool = False) -> Path:
    def weights(net):
        sd = net.state_dict()
        return {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
                for k, v in sd.items()}
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(config)}
    blob.update({name: weights(net) for name, net in nets.items()})
    return atomic_torch_save(blob, path)


def _load_failure(path: Path, exc: Exception) -> str:
    """Why torch.load refused a file, in a few words instead of PyTorch's paragraph."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch's zip format nor a pickle
        return "not a PyTorch file"
    text = str(exc)
    if "Weights only load failed" in text:  # the unpickler's own reason follows "error:"
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[-1].split())
        return ("it holds objects other than weights, refused without running them: "
                + reason.split(" was not an allowed")[0].split(". ")[0][:100])
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        return "a truncated or damaged PyTorch file"
    return f"{type(exc).__name__}: {' '.join(text.split('. ')[0].split())[:100]}"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> SmileModel:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path}: " + ("is a folder, not a file" if path.is_dir() else "not found"))
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not for the user
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle payload, a zip of something else, a truncated file
        raise ModelFileError(f"model file {path}: not a SMILE model file ({_load_failure(path, exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelFileError(f"model file {path}: not a SMILE model file (no '{FORMAT}' format tag)")
    version = blob.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"model file {path}: format version {version} is newer than this "
                             f"smilecore ({__version__}) reads (up to {FORMAT_VERSION}); update SMILE")
    try:
        config = json.loads(blob["config"])
        nets = build_networks(config["networks"])
        for name, net in nets.items():
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob[name].items()})
    except Exception as exc:
        raise ModelFileError(f"model file {path}: damaged or inconsistent ({type(exc).__name__}: {exc})") from None
    bad = [f"{name}.{k}" for name, net in nets.items() for k, v in net.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"model file {path}: weights hold NaN or infinite values ({', '.join(bad[:3])}"
                             f"{' ...' if len(bad) > 3 else ''}); the training that wrote it diverged")
    for net in nets.values():
        net.eval().to(device)
    return SmileModel(nets, config, path)


def resources_dir() -> Path:
    return Path(__file__).resolve().parent / "resources"


def default_model_path() -> Path:
    return resources_dir() / "smile-default-t2.pt"
