"""SMILESynthesis module logic: run a SMILE model on a volume node and write the results into
MRML nodes; re-synthesise from an edited or painted lesion segment (review mode).

MRML level only (no qt), so that it runs under pytest with the `slicer-core` wheel.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from . import nodes
from .i18n import tr as _

OUTPUT_ROLES = ("pseudoNormal", "lesion", "difference", "pseudoAbnormal")
OUTPUT_ATTRIBUTE = "SMILE.output"  # on the nodes SMILE writes (its role): a batch never runs on them


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


def wanted_outputs(params) -> dict[str, bool]:
    """The outputs asked for, by role, from the panel's check boxes (makePseudoNormal, makeLesion, ...)."""
    return {role: bool(getattr(params, "make" + role[0].upper() + role[1:])) for role in OUTPUT_ROLES}


def engine_resources() -> Path:
    """The engine's resources folder, found without importing the engine: importing it imports torch
    and nibabel, which Slicer does not bundle, and module start-up must not need them."""
    spec = importlib.util.find_spec("smilecore")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(_("the SMILE engine (smilecore) is missing from this installation"))
    return Path(spec.origin).parent / "resources"


BUNDLED_MODEL_NAME = "smile-default-t2.pt"
DEFAULT_MODEL = "default"  # the parameter node's value for the bundled model: never its install path


def bundled_model_path() -> Path:
    return engine_resources() / BUNDLED_MODEL_NAME  # smilecore.modelfile.default_model_path()


def model_file(choice: str | Path | None) -> Path:
    """The model file of a panel's model choice: DEFAULT_MODEL (or nothing) is the bundled model of
    this installation, wherever it is; anything else is a file path. A path to a bundled model that no
    longer exists (a scene saved before the choice was symbolic, by an installation since moved or
    updated) is the bundled model too."""
    text = str(choice or "").strip()
    if text in ("", ".", DEFAULT_MODEL):
        return bundled_model_path()
    path = Path(text)
    if path.name == BUNDLED_MODEL_NAME and path.parent.name == "resources" and not path.exists():
        return bundled_model_path()
    return path


def model_choice(path: str | Path | None) -> str:
    """What the parameter node keeps for a model file: DEFAULT_MODEL for the bundled model (or no
    path), else the path."""
    text = str(path or "").strip()
    if text in ("", ".", DEFAULT_MODEL):
        return DEFAULT_MODEL
    try:
        if Path(text).resolve() == bundled_model_path().resolve():
            return DEFAULT_MODEL
    except (OSError, ModuleNotFoundError):
        pass
    return text


def model_entry(model_path: str, entries: list[str], other_file: bool = False) -> tuple[int, str]:
    """What the model selector shows for the parameter node's model: (index among the selector's
    entries, whose last is "Model file below", and the path field's text). The bundled model is its entry
    and an empty field (or "Model file below" while the user is about to type a path); a registered model
    its entry and its path; any other file "Model file below" and its path."""
    choice = model_choice(model_path)
    last = len(entries) - 1
    if other_file and choice == DEFAULT_MODEL:
        return last, ""
    return (entries.index(choice) if choice in entries else last), ("" if choice == DEFAULT_MODEL else choice)


def bundled_sample_paths() -> tuple[Path, Path]:
    sample = engine_resources() / "sample"
    return next(sample.glob("*_t2.nii.gz")), next(sample.glob("*_seg.nii.gz"))


class SynthesisLogic:
    def __init__(self, scene):
        self.scene = scene
        self._models = {}
        self.notes: list[str] = []  # messages of the last run (see `run`)
        self.segmentor: str | None = None  # the segmentor of the last run: "S" or "S_t2", or "S_flair" with a FLAIR

    def load_model(self, path: str | Path | None = None, device: str = "auto"):
        """Model files are cached per (path, modification time, device)."""
        from smilecore.modelfile import load_model
        from smilecore.train import resolve_device
        path = model_file(path)
        key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0, device)
        if key not in self._models:
            self._models[key] = load_model(path, resolve_device(device))
        return self._models[key]

    def run(self, input_volume, model, outputs: Outputs, mask_segmentation=None, segment_id=None,
            progress=None, cancel=None, modality=None, notify=None, brain_mask=None, flair_volume=None):
        """Synthesise in this thread and fill the output nodes (the panel runs the same in a background
        process: job.SynthesisJob). With `mask_segmentation`, its segment (or all segments) replaces
        S's lesion mask: the pseudo-normal is the input outside the mask and G inside, and the
        pseudo-abnormal is R(G(I), mask). `brain_mask`: a segmentation node (all its segments) or a
        volume node on the input's grid (voxels > 0) for an input that is not skull-stripped.

        `modality`: the input's modality if the user states it; else a BraTS modality suffix of
        the node's name (``..._flair``) is taken as the input's modality. A modality other than
        the model's is refused (smilecore.synthesis.ModalityMismatch) before any work.
        `notify(message)`: what the user should know (oblique input, out-of-memory retry, CPU
        fallback); the messages are also in `self.notes` after the run.
        `flair_volume`: an optional FLAIR of the same head, any grid (the engine resamples it onto the
        input's, smilecore.flair): the model's S_flair then finds the lesion (`self.segmentor`). A model
        without S_flair is refused before any work with one line (`no_flair_segmentor`).

        Nothing is written to any node until the engine has finished, so a cancelled or failed
        run leaves no half-filled node. Returns the Outputs with the nodes actually used."""
        from smilecore.flair import NoFlairSegmentor, check_flair_name
        from smilecore.synthesis import check_modality, synthesize
        given = self.inputs(input_volume, outputs, mask_segmentation, segment_id, brain_mask, flair_volume)
        check_modality(model, stated=modality, name=given["name"], where=given["where"])
        if given["flair"] is not None:
            if model.flair is None:
                raise NoFlairSegmentor(no_flair_segmentor(model.path))
            check_flair_name(given["flair_name"], given["flair_where"])
        result = synthesize(given["data"], given["affine"], model, mask=given["mask"], progress=progress,
                            cancel=cancel, where=given["where"], notify=notify or (lambda message: None),
                            brain=given["brain"], flair=given["flair"], flair_where=given["flair_where"])
        self.notes, self.segmentor = list(result.notes), result.segmentor
        return self.write_outputs(input_volume, {name: getattr(result, name) for name in RESULT_NAMES},
                                  outputs, mask_segmentation)

    def inputs(self, input_volume, outputs: Outputs, mask_segmentation=None, segment_id=None,
               brain_mask=None, flair_volume=None) -> dict:
        """What the engine needs, read from the nodes: the input's array and affine (IJK order), the
        lesion mask and brain mask as arrays on its grid (or None), its name; the FLAIR's array and
        its own IJK-to-RAS affine (any grid: the engine resamples it) or None (always None in review, with
        `mask_segmentation`); the outputs checked
        (`check_outputs`). Raises ValueError naming the problem."""
        if input_volume is None:
            raise ValueError(_("select an input volume"))
        if mask_segmentation is not None:   # review: the user's segment is the lesion, S_flair's would be unused
            flair_volume = None
        check_outputs(input_volume, outputs, brain_mask, flair_volume)
        flair = None
        if flair_volume is not None:
            if flair_volume is input_volume:
                raise ValueError(_("the FLAIR volume cannot be the input volume '{input}': choose the FLAIR "
                                   "image of the same head, or none").format(input=input_volume.GetName()))
            if flair_volume is brain_mask:
                raise ValueError(_("the FLAIR volume cannot be the brain mask '{mask}': choose the FLAIR image of "
                                   "the same head, or none").format(mask=brain_mask.GetName()))
            flair = nodes.array_from_volume(flair_volume, _("FLAIR"))
        data, affine = nodes.array_from_volume(input_volume)
        mask = None
        if mask_segmentation is not None:
            mask = nodes.segmentation_to_mask(self.scene, mask_segmentation, input_volume, segment_id)
        brain = None if brain_mask is None else self.brain_mask_array(brain_mask, input_volume)
        flair_name = None if flair_volume is None else flair_volume.GetName()
        return {"data": data, "affine": affine, "mask": mask, "brain": brain, "name": input_volume.GetName(),
                "where": f"volume '{input_volume.GetName()}'", "flair": flair, "flair_name": flair_name,
                "flair_where": f"FLAIR volume '{flair_name}'"}

    def brain_mask_array(self, brain_mask, input_volume):
        """A brain mask node as a boolean array on the input's grid: every segment of a segmentation
        (exported onto the input's grid), or the voxels > 0 of a volume on the input's grid."""
        import numpy as np
        if brain_mask.IsA("vtkMRMLSegmentationNode"):
            return nodes.segmentation_to_mask(self.scene, brain_mask, input_volume)
        array, affine = nodes.array_from_volume(brain_mask)
        data_shape = input_volume.GetImageData().GetDimensions()
        if array.shape != tuple(data_shape) or not np.allclose(affine, nodes.ijk_to_ras(input_volume), atol=1e-3):
            raise ValueError(_("brain mask '{mask}' is not on the grid of input volume '{input}' (size {size} "
                               "against {expected}); resample it onto the input first, or give it as a "
                               "segmentation").format(mask=brain_mask.GetName(), input=input_volume.GetName(),
                                                      size=array.shape, expected=tuple(data_shape)))
        return array > 0

    def write_outputs(self, input_volume, arrays: dict, outputs: Outputs, mask_segmentation=None) -> Outputs:
        """Fill the output nodes (new ones created with display nodes, next to the input) from the
        engine's arrays (RESULT_NAMES, IJK order of the input). Returns the nodes used."""
        base = input_volume.GetName()
        used = Outputs()
        volumes = {"pseudoNormal": ("pseudo_normal", "pseudo-normal"),
                   "difference": ("difference", "difference"),
                   "pseudoAbnormal": ("pseudo_abnormal", "pseudo-abnormal")}
        for role, (name, suffix) in volumes.items():
            target = getattr(outputs, role)
            if target is None:
                continue
            node = nodes.volume_from_array(self.scene, arrays[name], input_volume, f"{base} {suffix}",
                                           None if target == NEW else target, display=True)
            nodes.place_next_to(self.scene, node, input_volume)
            node.SetAttribute(OUTPUT_ATTRIBUTE, role)
            setattr(used, role, node)
        if outputs.lesion is not None:
            if mask_segmentation is not None and outputs.lesion in (NEW, mask_segmentation):
                used.lesion = mask_segmentation  # the user's edited mask is the lesion: leave it
            else:
                seg = nodes.mask_to_segmentation(self.scene, arrays["lesion_mask"], input_volume,
                                                 None if outputs.lesion == NEW else outputs.lesion,
                                                 f"{base} lesion")
                nodes.place_next_to(self.scene, seg, input_volume)
                seg.SetAttribute(OUTPUT_ATTRIBUTE, "lesion")
                used.lesion = seg
        return used


RESULT_NAMES = ("pseudo_normal", "lesion_mask", "difference", "pseudo_abnormal")


class OutputIsInput(ValueError):
    """An output node is the input volume (or the brain mask, or the FLAIR): writing it would destroy an input."""


def no_flair_segmentor(model_path) -> str:
    """The one line a user reads when a FLAIR is selected with a model that has no S_flair."""
    return _("the model '{model}' has no FLAIR segmentor: set the FLAIR selector to none to synthesise from "
             "the input alone, or choose a model with one").format(model=Path(str(model_path or "")).name)


def check_outputs(input_volume, outputs: Outputs, brain_mask=None, flair_volume=None) -> None:
    """Refuse an output node that is the input volume, the brain mask volume or the FLAIR volume."""
    labels = {"pseudoNormal": _("pseudo-normal"), "difference": _("difference"),
              "pseudoAbnormal": _("pseudo-abnormal"), "lesion": _("lesion")}
    for role in OUTPUT_ROLES:
        node = getattr(outputs, role)
        if node is None or node == NEW:
            continue
        if input_volume is not None and node is input_volume:
            raise OutputIsInput(_("the {output} output cannot be the input volume '{input}': it would be "
                                  "overwritten. Choose another node, or none to create a new one").format(
                                      output=labels[role], input=input_volume.GetName()))
        if brain_mask is not None and node is brain_mask:
            raise OutputIsInput(_("the {output} output cannot be the brain mask '{mask}'").format(
                output=labels[role], mask=brain_mask.GetName()))
        if flair_volume is not None and node is flair_volume:
            raise OutputIsInput(_("the {output} output cannot be the FLAIR volume '{flair}'").format(
                output=labels[role], flair=flair_volume.GetName()))


def model_choices() -> list[tuple[str, str]]:
    """What the model selector offers, (label, choice): the bundled default first (DEFAULT_MODEL),
    then models trained by the user (SMILETrainer registers them), newest first (their paths)."""
    from smilecore.registry import registered_models
    return [(_("Default T2 model (bundled)"), DEFAULT_MODEL)] + [
        (f"{e['name']} ({e['modality']})", str(Path(e["path"]))) for e in registered_models()]


def sample_data_source() -> dict:
    """The bundled sample case as keyword arguments of SampleDataLogic.registerCustomSampleDataSource
    (Slicer 5.10 names): local file URIs with SHA256 checksums. The T2 comes first, so that it is
    the volume the panel's input selector takes; the FLAIR is there for the optional FLAIR selector. Its
    node name ends in a BraTS-style suffix (-FLAIR), so that a T2 model refuses it by name where it is
    given as an input, alone or in a batch over the loaded volumes, rather than reading it as a T2."""
    import hashlib
    image, seg = bundled_sample_paths()
    flair = image.with_name(image.name.replace("_t2.", "_flair."))
    files = (image, flair, seg)
    return {"sampleName": "SMILE brain tumour T2 and FLAIR (BraTS 2018)",
            "uris": [p.as_uri() for p in files],
            "fileNames": [p.name for p in files],
            "nodeNames": ["SMILE sample T2", "SMILE sample-FLAIR", "SMILE sample expert lesion"],
            "loadFileTypes": ["VolumeFile", "VolumeFile", "SegmentationFile"],
            "checksums": ["SHA256:" + hashlib.sha256(p.read_bytes()).hexdigest() for p in files]}
