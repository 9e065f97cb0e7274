"""What the synthesis panel's parameter node asks of the logic: which output selectors to clear, the
outputs to write, and the background job or batch to start. No qt and no Slicer application here: the
widget (SMILESynthesis.py) shows, the decisions are made here.

FLAIR (issue 23, item 3): the optional FLAIR volume (`flairVolume`) is read from its node and sent to
the worker as the input is, with its own IJK-to-RAS matrix; the engine resamples it onto the input's
grid when the grids differ. The panel does not load the model before Apply (that would import torch
into Slicer's process at every model change), so it cannot know beforehand whether the model has a
FLAIR segmentor (S_flair). The selector therefore stays enabled, its tooltip says a model with S_flair
is needed, and a model without one is refused by the worker right after loading it, before any
synthesis: the panel shows one translated line (logic.no_flair_segmentor) and no node changes. A
Slicer user sees the same as for any other refused input (a wrong modality), rather than a selector
greyed out for a reason the panel could only learn by loading the model. Re-synthesis from the lesion
segment (review) sends no FLAIR: the user's segment is the lesion there, so S_flair's mask would not be
used, and a FLAIR left selected must not stop a review with a model that has no S_flair.
"""
from __future__ import annotations

from .i18n import tr as _

OUTPUT_PARAMETERS = ("pseudoNormalVolume", "lesionSegmentation", "differenceVolume", "pseudoAbnormalVolume")


def outputs_holding(params, *nodes) -> list[str]:
    """The output parameters whose node is one of `nodes` (an input, which would be overwritten; a node
    being deleted, which the selector would replace by another)."""
    return [name for name in OUTPUT_PARAMETERS if getattr(params, name) is not None
            and any(getattr(params, name) is node for node in nodes)]


def outputs_to_clear(params) -> list[str]:
    """The output parameters set to one of the panel's inputs: the input volume, the brain mask or the FLAIR."""
    return outputs_holding(params, params.inputVolume, params.brainMask, params.flairVolume)


def output_label(name: str) -> str:
    return {"pseudoNormalVolume": _("pseudo-normal"), "lesionSegmentation": _("lesion"),
            "differenceVolume": _("difference"), "pseudoAbnormalVolume": _("pseudo-abnormal")}[name]


def planned_outputs(params):
    """The Outputs to write, from the check boxes and the output selectors."""
    from .logic import OUTPUT_ROLES, plan_outputs, wanted_outputs
    chosen = {role: getattr(params, name) for role, name in zip(OUTPUT_ROLES, OUTPUT_PARAMETERS)}
    return plan_outputs(wanted_outputs(params), chosen)


def start_job(scene, params, review=False, python=None):
    """A synthesis in a background process (job.SynthesisJob), with the FLAIR if one is selected (the
    logic leaves it out in review, where the user's segment is the lesion: SynthesisLogic.inputs)."""
    from .job import SynthesisJob
    from .logic import SynthesisLogic
    return SynthesisJob(SynthesisLogic(scene), params.inputVolume, planned_outputs(params), model=params.modelPath,
                        device=params.device, mask_segmentation=params.lesionSegmentation if review else None,
                        brain_mask=params.brainMask, python=python,
                        flair_volume=params.flairVolume).start()


def start_batch(scene, params, folder="", python=None):
    """A batch (batch.BatchRun) over the image files of `folder`, or the loaded volumes but the brain mask.
    Each case's FLAIR is found by name among them (batch.with_flairs); the FLAIR selected for Apply is
    not a case of its own."""
    from .batch import BatchRun, folder_cases, loaded_cases, with_flairs
    from .logic import SynthesisLogic, wanted_outputs
    folder = (folder or "").strip()
    cases = with_flairs(folder_cases(folder) if folder else loaded_cases(scene, exclude=[params.brainMask]))
    cases = [case for case in cases if folder or params.flairVolume is None or case.volume is not params.flairVolume]
    if not cases:
        raise ValueError(_("No scalar volume is loaded: load the cases, or give a folder of cases."))
    return BatchRun(SynthesisLogic(scene), cases, wanted_outputs(params), model=params.modelPath,
                    device=params.device, python=python).start()


def follow_input(scene, params, previous) -> tuple[dict, str]:
    """What the FLAIR and brain mask selectors become when the input changes from `previous`, and the
    line that says so (empty when nothing changes). They were chosen for another head, and on a
    shared grid (BraTS) a stale one would give a silently wrong lesion or brain. So the brain mask is
    cleared, and a FLAIR in use becomes the new input's own if one is loaded (same case name, BraTS
    suffixes: batch.with_flairs), else none. Nothing changes when there was no input before (the
    panel opening, a scene restoring its parameter node) or the input is the same."""
    current = params.inputVolume
    if previous is None or current is None or previous is current:
        return {}, ""
    changes, lines = {}, []
    if params.brainMask is not None:
        changes["brainMask"] = None
        lines.append(_("brain mask cleared (it was chosen for '{previous}')").format(previous=previous.GetName()))
    if params.flairVolume is not None:
        flair = own_flair(scene, current)
        changes["flairVolume"] = flair
        lines.append(_("FLAIR set to '{flair}'").format(flair=flair.GetName()) if flair is not None else
                     _("FLAIR cleared (no FLAIR named as '{input}' is loaded)").format(input=current.GetName()))
    return changes, (_("Input changed: ") + "; ".join(lines) + ".") if lines else ""


def own_flair(scene, volume):
    """The loaded FLAIR named as `volume`'s case (e.g. 'X_flair' for 'X_t2'), or None."""
    from .batch import Case, loaded_cases, with_flairs
    cases = loaded_cases(scene, exclude=[volume])
    pairs = with_flairs([Case(volume.GetName(), volume=volume)] + cases)
    return pairs[0].flair.volume if pairs and pairs[0].volume is volume and pairs[0].flair else None
