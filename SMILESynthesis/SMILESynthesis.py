import logging
import os
import sys
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _, translate  # noqa: I001
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# A checkout used through "Additional module paths" has the engine one folder up; an installed extension
# has it beside the modules. SMILESynthesisLib.logic finds its files without importing it (torch, nibabel).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_CHECKOUT, "smilecore")) and _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
from SMILESynthesisLib.batch import first_input_volume  # noqa: E402
from SMILESynthesisLib.logic import (DEFAULT_MODEL, model_choice, model_choices, model_entry,  # noqa: E402
                                     sample_data_source)
from SMILESynthesisLib.panel import follow_input, output_label, outputs_holding, outputs_to_clear  # noqa: E402


class SMILESynthesis(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SMILE Synthesis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SMILE developers (SlicerSMILE)"]
        self.parent.helpText = _(
            "Synthesises the brain without its lesion (pseudo-normal), segments the lesion, and paints "
            "a lesion where a segment says (pseudo-abnormal), with a SMILE model. Edit the lesion segment "
            "and press 'Re-synthesise from lesion segment' to review a segmentation or to paint a lesion. "
            "For a head that is not skull-stripped, give a brain mask. With a model that has a FLAIR segmentor, "
            "an optional FLAIR of the same head helps find the lesion. Synthesis runs in a background process; "
            "Cancel stops it at once. Batch runs the model on every loaded volume, or on every image file of "
            "a folder, and writes a summary table. Not for clinical use. See the "
            '<a href="https://github.com/smile-slicer/SlicerSMILE#readme">documentation</a>.')
        self.parent.acknowledgementText = _(
            "SMILE: semi-supervised pseudo-normality synthesis. The bundled sample case is BraTS 2018 data "
            "(Menze et al. 2015; Bakas et al. 2017, 2018).")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Runs at every start-up: finds the sample files without importing the engine (torch, nibabel)."""
    import SampleData
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SMILE", **sample_data_source(),
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "SMILESynthesis.png"))


@parameterNodeWrapper
class SMILESynthesisParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    # DEFAULT_MODEL ("default") for the bundled model, whatever folder this installation is in (a saved
    # scene loads anywhere and after updates), or the path of a model file.
    modelPath: str = DEFAULT_MODEL
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    brainMask: Union[vtkMRMLSegmentationNode, vtkMRMLScalarVolumeNode, None]
    flairVolume: vtkMRMLScalarVolumeNode  # optional (None): the FLAIR of the same head, for a model with S_flair
    makePseudoNormal: bool = True
    makeLesion: bool = True
    makeDifference: bool = False
    makePseudoAbnormal: bool = True
    pseudoNormalVolume: vtkMRMLScalarVolumeNode
    lesionSegmentation: vtkMRMLSegmentationNode
    differenceVolume: vtkMRMLScalarVolumeNode
    pseudoAbnormalVolume: vtkMRMLScalarVolumeNode


class SMILESynthesisWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._batch = None  # a BatchRun while a batch runs (SMILESynthesisLib.batch)
        self._otherModelFile = False  # "Model file below" chosen while the field is still empty
        self._input = None  # the input the FLAIR and brain mask selectors were last set for (follow_input)
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onTimer)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SMILESynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SMILESynthesisLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeAboutToBeRemovedEvent, self.onNodeAboutToBeRemoved)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.reviewButton.connect("clicked(bool)", self.onReviewButton)
        self.ui.batchButton.connect("clicked(bool)", self.onBatchButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChoice)
        # The real ctkPathLineEdit emits currentPathChanged only for a path its validator accepts (one
        # ending in .pt here); a cleared field is seen through validInputChanged.
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.modelPathLineEdit.connect("validInputChanged(bool)", self.onModelPathValidity)
        self.ui.progressBar.hide()
        self._fillModelChoices()
        self.initializeParameterNode()

    def cleanup(self):
        """Also when Slicer closes: a synthesis still running is cancelled (its process killed)."""
        self._timer.stop()
        for work in (self._job, self._batch):
            if work is not None:
                work.cancel()
        self._job = self._batch = None
        self._disconnect()  # before removeObservers: _disconnect removes its own observer
        self.removeObservers()

    def enter(self):
        self._fillModelChoices()
        self.initializeParameterNode()

    def exit(self):
        self._disconnect()

    def onSceneStartClose(self, caller, event):
        for work in (self._job, self._batch):  # its nodes are going: nothing to write into
            if work is not None and work.running and work.cancel():
                self.ui.statusLabel.text = _("Cancelled: the scene was closed.")
                self._end()
        self._disconnect()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def onNodeAboutToBeRemoved(self, caller, event, node):
        """A deleted output is cleared: else its selector takes another volume, which Apply would overwrite."""
        for name in self.logic.outputsHolding(self._parameterNode, node) if self._parameterNode else ():
            setattr(self._parameterNode, name, None)

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:  # a scalar volume (not a label map) that is not an output
            self._parameterNode.inputVolume = first_input_volume(slicer.mrmlScene)

    def _disconnect(self):
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParametersChanged)

    def setParameterNode(self, inputParameterNode):
        self._disconnect()
        self._parameterNode = inputParameterNode
        self._input = inputParameterNode.inputVolume if inputParameterNode else None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParametersChanged)
            self.onParametersChanged()

    # ---- model choice: the combo box and the path field show the parameter node's model -------------
    def _fillModelChoices(self):
        choices = model_choices() + [(_("Model file below"), "")]
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        try:  # signals are unblocked whatever happens
            self.ui.modelComboBox.clear()
            for label, choice in choices:
                self.ui.modelComboBox.addItem(label, str(choice))
        finally:
            self.ui.modelComboBox.blockSignals(wasBlocked)
        if self._parameterNode:
            self._showModel()

    def onModelChoice(self, index):
        choice = self.ui.modelComboBox.itemData(index)
        self._otherModelFile = not choice
        if choice and self._parameterNode:
            self._parameterNode.modelPath = choice
        self._showModel()

    def onModelPathChanged(self, path):
        if self._parameterNode and not self._showingModel:
            self._otherModelFile = False
            self._parameterNode.modelPath = model_choice(path)

    def onModelPathValidity(self, valid):
        cleared = not self.ui.modelPathLineEdit.currentPath.strip()
        if not valid and cleared and self._parameterNode and not self._showingModel:
            self._parameterNode.modelPath = DEFAULT_MODEL  # cleared: the bundled model

    _showingModel = False

    def _showModel(self):
        """Combo box and path field from the parameter node (which entry, which text: model_entry)."""
        combo = self.ui.modelComboBox
        index, text = model_entry(self._parameterNode.modelPath, [combo.itemData(i) for i in range(combo.count)],
                                  self._otherModelFile)
        self._showingModel = True
        wasBlocked = combo.blockSignals(True)
        try:
            combo.currentIndex = index
            if self.ui.modelPathLineEdit.currentPath != text:
                self.ui.modelPathLineEdit.currentPath = text
        finally:
            combo.blockSignals(wasBlocked)
            self._showingModel = False

    # ---- parameters -> buttons, refusals ------------------------------------------------------------
    def onParametersChanged(self, caller=None, event=None):
        params = self._parameterNode
        if params is None:
            return
        for name in outputs_to_clear(params):
            setattr(params, name, None)
            message = _("The {output} output cannot be the input volume, the brain mask or the FLAIR: it would be "
                        "overwritten. A new node will be created instead.").format(output=output_label(name))
            self.ui.statusLabel.text = message
            logging.warning(message)
            return  # the change above calls this again
        changes, message = follow_input(slicer.mrmlScene, params, self._input)
        if params.inputVolume is not None:  # through "none", the last input is still the one they were for
            self._input = params.inputVolume
        if changes:
            for name, node in changes.items():
                setattr(params, name, node)
            self.ui.statusLabel.text = message
        self._showModel()
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None):
        running = self._job is not None and self._job.running
        batch = self._batch is not None and self._batch.running
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = (hasInput or running) and not batch
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.reviewButton.enabled = hasInput and bool(self._parameterNode.lesionSegmentation) and not (
            running or batch)
        self.ui.batchButton.enabled = not running
        self.ui.batchButton.text = _("Cancel batch") if batch else _("Run batch")

    # ---- running --------------------------------------------------------------------------------------
    def onApplyButton(self):
        if self._job is not None and self._job.cancel():  # running, or finished but not yet in the scene
            self.ui.statusLabel.text = _("Cancelled: no output was changed.")
            return self._end()
        self._start(review=False)

    def onReviewButton(self):
        self._start(review=True)

    def _start(self, review):
        self._job = None
        with slicer.util.tryWithErrorDisplay(_("SMILE synthesis could not start."), waitCursor=True):
            self.logic.ensureDependencies()
            self._job = self.logic.startJob(self._parameterNode, review)
            self.ui.statusLabel.text = _("Starting: loading the model...")
            self._begin(maximum=1)
        self._updateButtons()

    def _begin(self, maximum):
        self.ui.progressBar.maximum, self.ui.progressBar.value = maximum, 0
        self.ui.progressBar.show()
        self._timer.start()

    def _end(self):
        self._timer.stop()
        self.ui.progressBar.hide()
        self._updateButtons()

    # ---- batch: the decisions are SMILESynthesisLib.batch's; here only what the user sees -----------
    def onBatchButton(self):
        if self._batch is not None and self._batch.running:
            self._batch.cancel()
            self._endBatch()
            return
        self._batch = None
        with slicer.util.tryWithErrorDisplay(_("SMILE batch could not start."), waitCursor=True):
            self.logic.ensureDependencies()
            self._batch = self.logic.startBatch(self._parameterNode, self.ui.batchFolderLineEdit.currentPath)
            self._begin(maximum=1000)
            self._pollBatch()
        self._updateButtons()

    def _pollBatch(self):
        batch = self._batch
        batch.poll()
        if not batch.running:
            return self._endBatch()
        job = batch.job
        slices = _("slice {done} of {total}").format(done=job.done, total=job.total) if job.total else _("starting")
        self.ui.statusLabel.text = _("Batch: case {index} of {count} ({name}): {slices}.").format(
            index=batch.index + 1, count=batch.count, name=batch.case.name, slices=slices)
        self.ui.progressBar.value = int(1000 * batch.fraction())

    def _endBatch(self):
        batch, cancelled = self._batch, self._batch.state == "cancelled"
        text = (_("Batch cancelled: {done} of {count} cases done; not done: {names}. Summary: table '{table}'.")
                if cancelled else _("Batch done: {count} cases; failed: {names}. Summary: table '{table}'."))
        self.ui.statusLabel.text = text.format(
            done=batch.count - len(batch.not_done), count=batch.count, table=batch.table.GetName(),
            names=", ".join(batch.not_done if cancelled else batch.failed) or _("none"))
        logging.info(self.ui.statusLabel.text)
        self._end()

    def onTimer(self):
        if self._batch is not None and self._batch.running:
            return self._pollBatch()
        job = self._job
        if job is None:
            return self._end()
        job.poll()
        if job.total:
            self.ui.statusLabel.text = self._status(_("Synthesising: slice {done} of {total}.").format(
                done=job.done, total=job.total), job.notes)
        elif job.notes:
            self.ui.statusLabel.text = self._status(_("Starting: loading the model..."), job.notes)
        if job.total:  # after the status: a Cancel pressed as the bar moves writes its own status
            self.ui.progressBar.maximum = job.total
            self.ui.progressBar.value = job.done
        if job is not self._job or job.state not in ("finished", "failed"):
            return
        if job.state == "finished":
            try:
                with slicer.util.tryWithErrorDisplay(_("SMILE synthesis failed."), waitCursor=True):
                    self.logic.finishJob(job, self._parameterNode)
                    self.ui.statusLabel.text = self._status(_("Done."), job.notes)
            finally:
                self._end()
        elif job.state == "failed":
            self.ui.statusLabel.text = self._status(_("Failed."), job.notes)
            self._end()
            slicer.util.errorDisplay(_("SMILE synthesis failed: {error}").format(error=job.error),
                                     detailedText="\n".join(job.log[-50:]))

    @staticmethod
    def _status(headline, notes):
        return "\n".join([headline] + [_("Note: {note}").format(note=note) for note in notes])


class SMILESynthesisLogic(ScriptedLoadableModuleLogic):
    """Application-level logic: parameter node, dependencies, views. The MRML work is done by
    SMILESynthesisLib (SynthesisLogic, SynthesisJob), which is tested outside the application."""

    def getParameterNode(self):
        return SMILESynthesisParameterNode(super().getParameterNode())

    def ensureDependencies(self):
        from SMILESynthesisLib.dependencies import ensure_dependencies
        ensure_dependencies(slicer.util.confirmOkCancelDisplay, testing=slicer.app.testingEnabled())

    @staticmethod
    def outputsHolding(params, *nodes):
        return outputs_holding(params, *nodes)

    def startJob(self, params, review=False, python=None):
        """A synthesis in a background process (SynthesisJob), with the FLAIR if one is selected (a model
        without S_flair is refused with one line: SMILESynthesisLib.panel); the scene is changed only by
        finishJob."""
        from SMILESynthesisLib.panel import start_job
        return start_job(slicer.mrmlScene, params, review, python)

    def startBatch(self, params, folder="", python=None):
        """A batch over the image files of `folder`, or the loaded volumes (SMILESynthesisLib.panel), each with its FLAIR found by name."""
        from SMILESynthesisLib.panel import start_batch
        return start_batch(slicer.mrmlScene, params, folder, python)

    def finishJob(self, job, params):
        """The finished job's result into the output nodes, the parameter node and the views."""
        used = job.finish()
        params.pseudoNormalVolume = used.pseudoNormal or params.pseudoNormalVolume
        params.lesionSegmentation = used.lesion or params.lesionSegmentation
        params.differenceVolume = used.difference or params.differenceVolume
        params.pseudoAbnormalVolume = used.pseudoAbnormal or params.pseudoAbnormalVolume
        self.showSideBySide(params.inputVolume, used.pseudoNormal, used.lesion)
        return used

    @staticmethod
    def showSideBySide(inputVolume, pseudoNormal, lesion):
        """Input (left) and pseudo-normal (right) in linked axial views, lesion overlaid."""
        from SMILESynthesisLib.nodes import show_side_by_side
        show_side_by_side(slicer.app.layoutManager(), inputVolume, pseudoNormal, lesion)


class SMILESynthesisTest(ScriptedLoadableModuleTest):
    """Inside Slicer: bundled sample case -> synthesis in a background process as Apply runs it -> review."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_case_synthesis_and_review()

    def test_sample_case_synthesis_and_review(self):
        from SMILESynthesisLib.dependencies import skip_test_without_engine
        skip_test_without_engine(self, slicer.app.testingEnabled())
        logic = SMILESynthesisLogic()
        logic.ensureDependencies()
        import numpy as np
        from SMILESynthesisLib import bundled_sample_paths, nodes
        self.delayDisplay(_("Loading the bundled sample case"))
        volume = slicer.util.loadVolume(str(bundled_sample_paths()[0]))
        params = logic.getParameterNode()
        params.inputVolume, params.makeDifference = volume, True
        self.delayDisplay(_("Synthesising in the background process"))
        used = self._runInBackground(logic, params, review=False)
        for node in (used.pseudoNormal, used.difference, used.pseudoAbnormal):
            self.assertTrue(np.allclose(nodes.ijk_to_ras(node), nodes.ijk_to_ras(volume)))
            self.assertEqual(node.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        mask = nodes.segmentation_to_mask(slicer.mrmlScene, used.lesion, volume)
        self.assertGreater(int(mask.sum()), 0, "the default model found no lesion in the sample case")
        self.delayDisplay(_("Re-synthesising from the lesion segment"))
        again = self._runInBackground(logic, params, review=True)
        pn = nodes.array_from_volume(again.pseudoNormal)[0]
        data = nodes.array_from_volume(volume)[0]
        self.assertTrue(np.array_equal(pn[~mask], data[~mask]))
        self.delayDisplay(_("SMILE synthesis test passed"))

    def _runInBackground(self, logic, params, review, timeout=1800):
        """What the panel's Apply does: a background job polled while Qt's events are processed."""
        import time
        job, deadline = logic.startJob(params, review), time.monotonic() + timeout
        while job.running and time.monotonic() < deadline:
            slicer.app.processEvents()
            job.poll()
            time.sleep(0.1)
        if job.running:
            job.cancel()
        self.assertEqual(job.state, "finished", job.error or "the synthesis did not finish in time")
        return logic.finishJob(job, params)
