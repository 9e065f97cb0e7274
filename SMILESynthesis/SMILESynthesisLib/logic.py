"""SMILESynthesis module logic: run a SMILE model on a volume node and write the results into
MRML nodes; re-synthesise from an edited or painted lesion segment (review mode).

MRML level only (no qt), so that it runs under pytest with the `slicer-core` wheel.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from . import nodes

OUTPUT_ROLES = ("pseudoNormal", "lesion", "difference", "pseudoAbnormal")


@dataclass
class Outputs:
    """Output nodes: None means "not wanted"; NEW means "create one"."""
    pseudoNormal: object = None
    lesion: object = None          # vtkMRMLSegmentationNode
    difference: object = None
    pseudoAbnormal: object = None


NEW = "new"


def plan_outputs(wanted: dict[str, bool], chosen: dict[str, object]) -> Outputs:
    """Outputs from the panel's choices: an output that is not wanted is None; a wanted one
    goes into the chosen node, or into a new node when none is chosen."""
    return Outputs(**{role: (chosen.get(role) or NEW) if wanted.get(role) else None for role in OUTPUT_ROLES})


def engine_resources() -> Path:
    """The engine's resources folder, found without importing the engine: importing it imports torch
    and nibabel, which Slicer does not bundle, and module start-up must not need them."""
    spec = importlib.util.find_spec("smilecore")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the SMILE engine (smilecore) is missing from this installation")
    return Path(spec.origin).parent / "resources"


def bundled_model_path() -> Path:
    return engine_resources() / "smile-default-t2.pt"  # smilecore.modelfile.default_model_path()


def bundled_sample_paths() -> tuple[Path, Path]:
    sample = engine_resources() / "sample"
    return next(sample.glob("*_t2.nii.gz")), next(sample.glob("*_seg.nii.gz"))


class SynthesisLogic:
    def __init__(self, scene):
        self.scene = scene
        self._models = {}
        self.notes: list[str] = []  # messages of the last run (see `run`)

    def load_model(self, path: str | Path | None = None, device: str = "auto"):
        """Model files are cached per (path, modification time, device)."""
        from smilecore.modelfile import load_model
        from smilecore.train import resolve_device
        path = Path(path) if path else bundled_model_path()
        key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0, device)
        if key not in self._models:
            self._models[key] = load_model(path, resolve_device(device))
        return self._models[key]

    def run(self, input_volume, model, outputs: Outputs, mask_segmentation=None, segment_id=None,
            progress=None, cancel=None, modality=None, notify=None):
        """Synthesise and fill the output nodes. With `mask_segmentation`, its segment (or all
        segments) replaces S's lesion mask: the pseudo-normal is the input outside the mask and
        G inside, and the pseudo-abnormal is R(G(I), mask).

        `modality`: the input's modality if the user states it; else a BraTS modality suffix of
        the node's name (``..._flair``) is taken as the input's modality. A modality other than
        the model's is refused (smilecore.synthesis.ModalityMismatch) before any work.
        `notify(message)`: what the user should know (oblique input, out-of-memory retry, CPU
        fallback); the messages are also in `self.notes` after the run.

        Nothing is written to any node until the engine has finished, so a cancelled or failed
        run leaves no half-filled node. Returns the Outputs with the nodes actually used."""
        from smilecore.synthesis import check_modality, synthesize
        if input_volume is None:
            raise ValueError("select an input volume")
        where = f"volume '{input_volume.GetName()}'"
        check_modality(model, stated=modality, name=input_volume.GetName(), where=where)
        data, affine = nodes.array_from_volume(input_volume)
        mask = None
        if mask_segmentation is not None:
            mask = nodes.segmentation_to_mask(self.scene, mask_segmentation, input_volume, segment_id)
        result = synthesize(data, affine, model, mask=mask, progress=progress, cancel=cancel,
                            where=where, notify=notify or (lambda message: None))
        self.notes = list(result.notes)
        base = input_volume.GetName()
        used = Outputs()
        arrays = {"pseudoNormal": (result.pseudo_normal, "pseudo-normal"),
                  "difference": (result.difference, "difference"),
                  "pseudoAbnormal": (result.pseudo_abnormal, "pseudo-abnormal")}
        for role, (array, suffix) in arrays.items():
            target = getattr(outputs, role)
            if target is None:
                continue
            node = nodes.volume_from_array(self.scene, array, input_volume, f"{base} {suffix}",
                                           None if target == NEW else target)
            nodes.place_next_to(self.scene, node, input_volume)
            setattr(used, role, node)
        if outputs.lesion is not None:
            if mask_segmentation is not None and outputs.lesion in (NEW, mask_segmentation):
                used.lesion = mask_segmentation  # the user's edited mask is the lesion: leave it
            else:
                seg = nodes.mask_to_segmentation(self.scene, result.lesion_mask, input_volume,
                                                 None if outputs.lesion == NEW else outputs.lesion,
                                                 f"{base} lesion")
                nodes.place_next_to(self.scene, seg, input_volume)
                used.lesion = seg
        return used


def model_choices() -> list[tuple[str, Path]]:
    """What the model selector offers: the bundled default first, then models trained by the
    user (SMILETrainer registers them), newest first."""
    from smilecore.registry import registered_models
    return [("Default T2 model (bundled)", bundled_model_path())] + [
        (f"{e['name']} ({e['modality']})", Path(e["path"])) for e in registered_models()]


def sample_data_source() -> dict:
    """The bundled sample case as keyword arguments of SampleDataLogic.registerCustomSampleDataSource
    (Slicer 5.10 names): local file URIs with SHA256 checksums."""
    import hashlib
    image, seg = bundled_sample_paths()
    return {"sampleName": "SMILE brain tumour T2 (BraTS 2018)",
            "uris": [image.as_uri(), seg.as_uri()],
            "fileNames": [image.name, seg.name],
            "nodeNames": ["SMILE sample T2", "SMILE sample expert lesion"],
            "loadFileTypes": ["VolumeFile", "SegmentationFile"],
            "checksums": ["SHA256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, seg)]}
