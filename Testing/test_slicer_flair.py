"""The optional FLAIR of the SMILE Synthesis panel (issue 23, item 3): real MRML (slicer-core), a real
small model whose S_flair reads the FLAIR channel (flair_helpers.py: its lesion mask is the FLAIR's
bright blob, away from the T2's lesion), real NIfTI files, the real background worker, and the panel
built from its .ui file (stand-ins: slicer_standins.py). The FLAIR is on a 2 mm grid in another voxel
order than the 1 mm T2, so it reaches the engine only if its own IJK-to-RAS matrix travels with it."""
import json
import re

import nibabel as nib
import numpy as np
import pytest

from flair_helpers import coarse_flair, dice, flair_case, flair_model
from slicer_widget_helpers import _node_ids, _panel, _read_volume, _wait, slicer, standins  # noqa: F401
from smilecore.synthetic import LPS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """NIfTI files of the case: the T2 (1 mm, LPS), its brain mask, the FLAIR (2 mm, left-right reversed);
    and the FLAIR's bright blob on the T2's grid, which S_flair's mask must be."""
    folder = tmp_path_factory.mktemp("slicer-flair")
    t2, flair, brain, blob = flair_case()
    coarse, affine = coarse_flair(flair)
    paths = {"t2": folder / "case_t2.nii.gz", "brain": folder / "case_brain.nii.gz",
             "flair": folder / "case_flair.nii.gz"}
    nib.save(nib.Nifti1Image(t2, LPS), paths["t2"])
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), LPS), paths["brain"])
    nib.save(nib.Nifti1Image(coarse, affine), paths["flair"])
    return {**paths, "blob": blob, "model": flair_model(folder / "with-flair.pt")}


def _nodes(slicer, files):
    return [_read_volume(slicer, files[name]) for name in ("t2", "brain", "flair")]


def test_the_logic_gives_a_flair_on_another_grid_to_s_flair(slicer, files):
    """SynthesisLogic.run with a FLAIR node: S_flair ran on it (its mask is the FLAIR's blob, resampled
    from 2 mm); without the FLAIR, S's mask is not the blob. A FLAIR that is the input, or an output
    that is the FLAIR, is refused before any work."""
    from SMILESynthesisLib import NEW, OutputIsInput, Outputs, SynthesisLogic, nodes, plan_outputs
    from smilecore.modelfile import load_model
    t2, brain, flair = _nodes(slicer, files)
    assert nodes.array_from_volume(flair)[0].shape == (24, 24, 12)  # read as the 2 mm file is
    logic, model = SynthesisLogic(slicer.mrmlScene), load_model(files["model"])
    wanted = plan_outputs({"pseudoNormal": True, "lesion": True}, {})
    used = logic.run(t2, model, wanted, brain_mask=brain, flair_volume=flair)
    with_flair = nodes.segmentation_to_mask(slicer.mrmlScene, used.lesion, t2)
    assert logic.segmentor == "S_flair" and any("S_flair's" in note for note in logic.notes), logic.notes
    assert any("(FLAIR volume 'case_flair': it must be the same patient's)" in note for note in logic.notes)
    assert any("resampled onto the T2's voxel grid" in note for note in logic.notes), logic.notes
    assert dice(with_flair, files["blob"]) > 0.8, dice(with_flair, files["blob"])

    used = logic.run(t2, model, wanted, brain_mask=brain)
    alone = nodes.segmentation_to_mask(slicer.mrmlScene, used.lesion, t2)
    assert logic.segmentor == "S" and dice(alone, files["blob"]) < 0.5, dice(alone, files["blob"])

    before = _node_ids(slicer.mrmlScene)
    with pytest.raises(ValueError, match="^the FLAIR volume cannot be the input volume 'case_t2'"):
        logic.run(t2, model, wanted, flair_volume=t2)
    with pytest.raises(OutputIsInput, match="^the pseudo-normal output cannot be the FLAIR volume 'case_flair'$"):
        logic.run(t2, model, Outputs(pseudoNormal=flair, lesion=NEW), flair_volume=flair)
    with pytest.raises(ValueError, match="^the FLAIR volume cannot be the brain mask 'case_brain'"):
        logic.run(t2, model, wanted, brain_mask=brain, flair_volume=brain)
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="^the FLAIR volume node holds no image data$"):
        logic.run(t2, model, wanted, flair_volume=empty)
    slicer.mrmlScene.RemoveNode(empty)
    assert _node_ids(slicer.mrmlScene) == before and nodes.array_from_volume(flair)[0].shape == (24, 24, 12)


def test_a_model_without_s_flair_is_refused_with_one_line_and_writes_nothing(slicer, files, model_path):
    """In this thread (SynthesisLogic.run) and in the background job the panel runs: the same one line,
    which names the model and says what to do, and no node is added or changed."""
    from SMILESynthesisLib import SynthesisJob, SynthesisLogic, no_flair_segmentor, plan_outputs
    from smilecore.flair import NoFlairSegmentor
    from smilecore.modelfile import load_model
    t2, brain, flair = _nodes(slicer, files)
    message = no_flair_segmentor(model_path)
    assert message == (f"the model '{model_path.name}' has no FLAIR segmentor: set the FLAIR selector to none to "
                       "synthesise from the input alone, or choose a model with one")
    logic, before = SynthesisLogic(slicer.mrmlScene), _node_ids(slicer.mrmlScene)
    wanted = plan_outputs({"pseudoNormal": True, "lesion": True}, {})
    with pytest.raises(NoFlairSegmentor) as refused:
        logic.run(t2, load_model(model_path), wanted, brain_mask=brain, flair_volume=flair)
    assert str(refused.value) == message
    job = SynthesisJob(logic, t2, wanted, model=model_path, device="cpu", brain_mask=brain, flair_volume=flair)
    job.start()
    assert _wait(lambda: _ended(job), timeout=120), job.log
    assert job.state == "failed" and job.error == message and job.done == 0, (job.state, job.error, job.log)
    assert _node_ids(slicer.mrmlScene) == before
    # a review (the user's lesion segment given) uses no FLAIR, so a FLAIR left selected is no reason to refuse
    from SMILESynthesisLib import NEW, Outputs, nodes
    segment = nodes.mask_to_segmentation(slicer.mrmlScene, files["blob"], t2)
    used = logic.run(t2, load_model(model_path), Outputs(pseudoNormal=NEW), mask_segmentation=segment,
                     brain_mask=brain, flair_volume=flair)
    assert logic.segmentor == "S" and used.pseudoNormal is not None


def test_the_panels_flair_selector_is_saved_and_reaches_the_worker(slicer, files, model_path, monkeypatch):
    """The selector binds to the parameter node (a node reference, saved with the scene); an output set
    to the FLAIR is cleared with a message; Apply sends the FLAIR with its own matrix to the worker,
    whose S_flair finds the blob (a review sends none); with a model without S_flair, Apply fails with
    the one line and changes no node."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params, scene = widget.ui, widget._parameterNode, slicer.mrmlScene
    t2, brain, flair = _nodes(slicer, files)
    assert ui.flairSelector.noneEnabled and list(ui.flairSelector.nodeTypes) == ["vtkMRMLScalarVolumeNode"]
    assert "FLAIR segmentor" in ui.flairSelector.toolTip
    ui.inputVolumeSelector.setCurrentNode(t2)
    ui.brainMaskSelector.setCurrentNode(brain)
    assert params.flairVolume is None
    ui.flairSelector.setCurrentNode(flair)
    assert params.flairVolume is flair and params.parameterNode.GetNodeReferenceID("flairVolume") == flair.GetID()
    ui.pseudoNormalSelector.setCurrentNode(flair)  # an output that is the FLAIR: cleared, with a message
    assert params.pseudoNormalVolume is None and "the FLAIR" in ui.statusLabel.text
    ui.deviceComboBox.currentIndex = 2  # cpu
    params.modelPath = str(files["model"])

    ui.applyButton.click()
    folder = widget._job.folder
    assert json.loads((folder / "job.json").read_text())["flair_where"] == "FLAIR volume 'case_flair'"
    from SMILESynthesisLib import nodes
    sent = np.load(folder / "flair_affine.npy")  # the FLAIR's own matrix, not the input's
    assert np.allclose(sent, nodes.ijk_to_ras(flair)) and not np.allclose(sent, nodes.ijk_to_ras(t2))
    assert np.load(folder / "flair_data.npy").shape == (24, 24, 12)
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    assert standins.slot_errors == [] and ui.statusLabel.text.startswith("Done."), ui.statusLabel.text
    assert widget._job.segmentor == "S_flair" and "S_flair's" in ui.statusLabel.text
    mask = nodes.segmentation_to_mask(scene, params.lesionSegmentation, t2)
    assert dice(mask, files["blob"]) > 0.8, dice(mask, files["blob"])
    waits = files["t2"].parent / "waits"  # a worker that only waits: the job's inputs are looked at
    waits.write_text("#!/bin/sh\nsleep 60\n")
    waits.chmod(0o755)
    review = widget.logic.startJob(params, review=True, python=str(waits))  # the segment is the lesion: no FLAIR
    assert (review.folder / "mask.npy").is_file() and not (review.folder / "flair_data.npy").exists()
    assert review.cancel()

    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: shown.append(text))
    before = _node_ids(scene)
    params.modelPath = str(model_path)  # no S_flair
    ui.applyButton.click()
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    assert ui.statusLabel.text.startswith("Failed."), ui.statusLabel.text
    from SMILESynthesisLib import no_flair_segmentor
    assert shown == [f"SMILE synthesis failed: {no_flair_segmentor(model_path)}"]
    assert _node_ids(scene) == before and standins.slot_errors == []
    widget.cleanup()


def _ended(job) -> bool:
    job.poll()
    return not job.running


def test_with_flairs_pairs_a_t2_with_the_flair_of_its_own_case_name_only(slicer):
    """BraTS 2018 and 2023 names pair; a FLAIR of another case, a name two cases share, a name without a
    modality suffix and a second copy ('_1') pair with nothing and stay cases."""
    from SMILESynthesisLib.batch import Case, with_flairs
    names = ["A_t2", "A_flair", "BraTS-GLI-00001-000-t2w", "BraTS-GLI-00001-000-t2f", "B_flair", "C_t2", "C_t2",
             "C_flair", "D_t2", "D_flair_1", "E", "E_seg"]
    kept = with_flairs([Case(name) for name in names])
    assert [(case.name, case.flair.name if case.flair else None) for case in kept] == [
        ("A_t2", "A_flair"), ("BraTS-GLI-00001-000-t2w", "BraTS-GLI-00001-000-t2f"), ("B_flair", None),
        ("C_t2", None), ("C_t2", None), ("C_flair", None), ("D_t2", None), ("D_flair_1", None), ("E", None),
        ("E_seg", None)]


def test_a_batch_runs_each_case_with_its_own_flair_or_says_the_model_cannot_use_it(slicer, files, model_path,
                                                                                   tmp_path):
    """A folder holding a case's T2 and FLAIR is one case, not two: with a model that has S_flair its lesion
    is S_flair's (the FLAIR's blob, read from the 2 mm file); with a model without one it runs from the T2
    alone and its row says the FLAIR was not used (a batch goes on, where Apply would refuse)."""
    import shutil
    import time
    from SMILESynthesisLib import SynthesisLogic, nodes
    from SMILESynthesisLib.batch import BatchRun, folder_cases, with_flairs
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("t2", "flair"):
        shutil.copy(files[name], folder / files[name].name)
    wanted = {"pseudoNormal": True, "lesion": True, "difference": False, "pseudoAbnormal": False}
    found = {}
    for model in (files["model"], model_path):
        cases = with_flairs(folder_cases(folder))
        assert [(c.name, c.flair.name) for c in cases] == [("case_t2", "case_flair")]
        before = {n.GetID() for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode")}
        batch = BatchRun(SynthesisLogic(slicer.mrmlScene), cases, wanted, model=model, device="cpu").start()
        deadline = time.time() + 240
        while batch.running and time.time() < deadline:
            batch.poll()
            time.sleep(0.05)
        assert batch.state == "done" and batch.failed == [] and len(batch.rows) == 1, batch.rows
        made = [n for n in slicer.util.getNodesByClass("vtkMRMLSegmentationNode") if n.GetID() not in before]
        found[model] = (nodes.segmentation_to_mask(slicer.mrmlScene, made[0], cases[0].volume), batch.rows[0]["notes"])
    with_flair, notes = found[files["model"]]
    assert dice(with_flair, files["blob"]) > 0.8 and "was not used" not in notes, notes
    alone, notes = found[model_path]
    assert dice(alone, files["blob"]) < 0.5
    assert re.search(r"the FLAIR volume 'case_flair(_1)?' was not used: the model has no FLAIR segmentor", notes), notes


def test_changing_the_input_clears_the_other_heads_brain_mask_and_takes_its_own_flair(slicer, files):
    """The FLAIR and brain mask were chosen for the old input: the brain mask is cleared, a FLAIR in use
    becomes the new input's own (same case name) or none, and the status line says so; with no FLAIR in
    use none is picked, and opening the panel or restoring the parameter node changes nothing."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params = widget.ui, widget._parameterNode
    t2, brain, flair = _nodes(slicer, files)
    other_t2 = _read_volume(slicer, files["t2"])
    other_t2.SetName("other_t2")
    other_flair = _read_volume(slicer, files["flair"])
    other_flair.SetName("other_flair")
    lone = _read_volume(slicer, files["t2"])
    lone.SetName("lone_t2")
    ui.inputVolumeSelector.setCurrentNode(t2)
    ui.brainMaskSelector.setCurrentNode(brain)
    ui.flairSelector.setCurrentNode(flair)
    assert (params.brainMask, params.flairVolume) == (brain, flair)
    ui.inputVolumeSelector.setCurrentNode(other_t2)
    assert params.brainMask is None and params.flairVolume is other_flair
    assert ui.flairSelector.currentNode() is other_flair and ui.brainMaskSelector.currentNode() is None
    assert ui.statusLabel.text == ("Input changed: brain mask cleared (it was chosen for 'case_t2'); "
                                   "FLAIR set to 'other_flair'."), ui.statusLabel.text
    ui.inputVolumeSelector.setCurrentNode(None)   # through "none": the FLAIR still belongs to other_t2
    assert params.flairVolume is other_flair
    ui.inputVolumeSelector.setCurrentNode(lone)
    assert params.flairVolume is None
    assert ui.statusLabel.text == "Input changed: FLAIR cleared (no FLAIR named as 'lone_t2' is loaded).", \
        ui.statusLabel.text
    said = ui.statusLabel.text
    ui.inputVolumeSelector.setCurrentNode(t2)  # no FLAIR in use: none is picked, nothing new to say
    assert params.flairVolume is None and ui.statusLabel.text == said
    ui.flairSelector.setCurrentNode(flair)
    ui.brainMaskSelector.setCurrentNode(brain)
    widget.setParameterNode(widget.logic.getParameterNode())  # restored as saved: kept
    assert (params.inputVolume, params.brainMask, params.flairVolume) == (t2, brain, flair)
    widget.cleanup()
