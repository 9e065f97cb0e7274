"""SMILE model files: G, S and R weights plus everything needed to use them, in one file.

The file is a plain `torch.save` of a dict holding only tensors, strings and numbers, and is
read with ``torch.load(weights_only=True)``: unpickling any other object (a payload that
would run code) is refused by torch before it is built. Layout:

    {"format": "smile-model", "format_version": 1,
     "config": <JSON string: networks, modality, normalisation, orientation, training summary>,
     "G": state_dict, "S": state_dict, "R": state_dict[, "S_flair": ..., "S_t2": ..., "Fill": ...]}

Weights may be stored in float16 to keep shipped files small; they are loaded as float32.

FLAIR (issue 23, item 3): a model may carry a second segmentor, "S_flair" (networks.FLAIR_NET),
for users who have a FLAIR beside the T2. Its recipe is the configuration's "flair_segmentor":
{"modalities": ["t2", "flair"], "mirror": true, "normalisation": "median", "median_level": 0.4,
"training": {...}}; what synthesis does with it is flair.py's. Its sizes in "networks" carry
`in_ch`, which must equal the recipe's channel count (modalities, twice with mirroring): a file
where they disagree is refused as inconsistent. Files without it load as before and accept no
FLAIR. The format version stays 1: an older smilecore builds G, S and R only and ignores the
extra weights, so it still reads such a file (without the FLAIR path).

T2 recipe segmentor (issue 23, item 2): a model may carry "S_t2" (networks.T2_NET), a segmentor of
the same kind on the T2 alone, with its recipe as "t2_segmentor" ({"modalities": ["t2"], ...}, the
same checks). Synthesis without a FLAIR uses it in place of S; G, R and training keep S. Either
recipe may say "min_component_share": synthesis then drops the 3D components of the lesion mask
smaller than that share of the largest (synthesis_segmentor.main_components), and "lesion_threshold",
its own probability threshold (else the model's "lesion_threshold", 0.5).
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
from .flair import DEFAULT_FLIPS, TEST_TIME_FLIPS
from .networks import FLAIR_NET, RECIPE_SEGMENTORS, T2_NET, build_networks
from .volume import MEDIAN_LEVEL, NORMALISATIONS

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

    def recipe(self, role: str) -> dict | None:
        """The recipe of the segmentor `role` (RECIPE_SEGMENTORS) in the configuration, None without it."""
        return self.config.get(RECIPE_KEYS[role]) if role in self.nets else None

    @property
    def flair(self) -> dict | None:
        """The FLAIR segmentor's recipe ("flair_segmentor" in the configuration), None without one."""
        return self.recipe(FLAIR_NET)

    @property
    def segmentor_without_flair(self) -> str:
        """The segmentor synthesis runs when no FLAIR is given: S_t2 where the model has it, else S."""
        return T2_NET if T2_NET in self.nets else "S"

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


def segmentor_recipe(modalities=("t2", "flair"), mirror: bool = True, normalisation: str = "median",
                     training: dict | None = None) -> dict:
    """A recipe segmentor's entry in the configuration ("flair_segmentor", or "t2_segmentor" with
    modalities ("t2",)): what its input channels are (flair.py)."""
    return {"modalities": list(modalities), "mirror": bool(mirror), "normalisation": normalisation,
            **({"median_level": MEDIAN_LEVEL} if normalisation == "median" else {}),
            "mirror_centre": "centre of the brain's left-right extent (T2 brain mask)",
            "training": training or {}}


def recipe_channels(recipe: dict) -> int:
    return len(recipe["modalities"]) * (2 if recipe["mirror"] else 1)


RECIPE_KEYS = {FLAIR_NET: "flair_segmentor", T2_NET: "t2_segmentor"}   # role -> its recipe's key


def _check_recipes(config: dict) -> None:
    """Each recipe segmentor of a model has a recipe that its input channels match (KeyError, ValueError):
    S_flair sees the T2 first and the FLAIR, S_t2 the T2 alone. The through-plane pass's sigma, where
    the configuration names one, is a number of slices >= 0 (synthesis_blend.pass_sigma), and the
    reach of G's change a number of mm >= 0 and a probability in (0, 1] (synthesis_blend.change_reach)."""
    sigma = config.get("through_plane_sigma", 0)
    if not (isinstance(sigma, (int, float)) and 0 <= sigma < 100):
        raise ValueError(f"through_plane_sigma {sigma!r} is not a number of slices in [0, 100)")
    reach, p = config.get("change_reach_mm", 0), config.get("change_reach_p", 1)
    if not (isinstance(reach, (int, float)) and not isinstance(reach, bool) and 0 <= reach < 1000):
        raise ValueError(f"change_reach_mm {reach!r} is not a number of mm in [0, 1000)")
    if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1):
        raise ValueError(f"change_reach_p {p!r} is not a probability in (0, 1]")
    for role in RECIPE_SEGMENTORS:
        if role not in config["networks"]:
            continue
        key = RECIPE_KEYS[role]
        recipe = config[key]
        modalities = list(recipe["modalities"])
        if modalities[:1] != ["t2"] or ("flair" in modalities) != (role == FLAIR_NET):
            raise ValueError(f"{key} modalities {modalities}: expected t2 first"
                             + (", and flair" if role == FLAIR_NET else ", and no flair"))
        if recipe["normalisation"] not in NORMALISATIONS:
            raise ValueError(f"{key} normalisation {recipe['normalisation']!r} is not one of {NORMALISATIONS}")
        if recipe.get("test_time_flips", DEFAULT_FLIPS) not in TEST_TIME_FLIPS:
            raise ValueError(f"{key} test_time_flips {recipe['test_time_flips']!r} is not one of "
                             f"{', '.join(TEST_TIME_FLIPS)}")
        share = recipe.get("min_component_share")
        if share is not None and not (isinstance(share, (int, float)) and 0 <= share < 1):
            raise ValueError(f"{key} min_component_share {share!r} is not a number in [0, 1)")
        threshold = recipe.get("lesion_threshold")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
            raise ValueError(f"{key} lesion_threshold {threshold!r} is not a number in (0, 1)")
        if config["networks"][role]["in_ch"] != recipe_channels(recipe):
            raise ValueError(f"{role} takes {config['networks'][role]['in_ch']} channels, its recipe "
                             f"gives {recipe_channels(recipe)}")


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
        _check_recipes(config)
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
