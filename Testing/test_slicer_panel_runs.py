"""The synthesis panel's runs, for the parts of issue 22 that the longer tests of test_slicer_widgets.py
leave open: a Cancel at the latest moment (10), the engine's notes of an oblique and of a not
skull-stripped input in the panel (2), a display node for every output (11a), the engine imported by
the worker only (1). Real panel code, real Qt (offscreen), real MRML, real worker processes; shared
helpers and the `slicer` fixture: slicer_widget_helpers.py."""
from slicer_widget_helpers import _node_ids, _panel, _read_volume, _slab, _wait, slicer, standins  # noqa: F401

WORKER_OUTPUTS = ["out_difference.npy", "out_lesion_mask.npy", "out_pseudo_abnormal.npy", "out_pseudo_normal.npy"]


# ---- issue 22, 10: "Cancelled: no output was changed" only when true ------------------------------------
def test_a_cancel_after_the_worker_wrote_every_result_changes_nothing_and_says_so(slicer, tmp_path):
    """Cancel pressed as the last slice's progress shows and, where a worker runs the synthesis, only
    once it has written every result file and exited: the latest moment a Cancel can come. The panel
    says nothing changed, and the scene is as before. (Before the fix the engine ran in the panel's
    thread, checked Cancel only before each batch of slices, and wrote the outputs after its last
    progress call while the panel said "Cancelled: no output was changed".) Only the panel's widgets
    are used, so that the same test runs on the code before the fix."""
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, scene = widget.ui, slicer.mrmlScene
    ui.inputVolumeSelector.setCurrentNode(_read_volume(slicer, _slab(tmp_path, count=4)))
    ui.deviceComboBox.currentIndex = 2  # cpu
    before, written = _node_ids(scene), []

    def at_the_last_slice(value):
        if value != ui.progressBar.maximum or ui.applyButton.text != "Cancel" or written:
            return
        job = getattr(widget, "_job", None)  # the background worker, where there is one
        if job is not None:
            job.process.proc.wait(timeout=120)
            written.append(sorted(p.name for p in job.folder.glob("out_*.npy")))
        else:
            written.append("no worker")
        ui.applyButton.click()  # Cancel

    ui.progressBar.valueChanged.connect(at_the_last_slice)
    ui.applyButton.click()
    assert _wait(lambda: ui.applyButton.text == "Apply", timeout=240), ui.statusLabel.text
    assert ui.statusLabel.text == "Cancelled: no output was changed."
    assert _node_ids(scene) == before, "outputs were written, yet the panel says no output was changed"
    assert written == [WORKER_OUTPUTS]  # the Cancel came after the worker had written all its results
    assert widget._job.state == "cancelled" and widget._job.folder is None and standins.slot_errors == []
    widget.cleanup()
