import os
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# A checkout used through "Additional module paths" has the engine one folder up; an installed extension
# has it beside the modules. SMILESynthesisLib.logic finds its files without importing it (torch, nibabel).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_CHECKOUT, "smilecore")) and _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)
from SMILESynthesisLib.logic import bundled_model_path, model_choices, sample_data_source  # noqa: E402


class SMILESynthesis(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SMILE Synthesis")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SMILE developers"]
        self.parent.helpText = _(
            "Synthesises the brain without its lesion (pseudo-normal), segments the lesion, and paints "
            "a lesion where a segment says (pseudo-abnormal), with a SMILE model. Edit the lesion segment "
            "and press 'Re-synthesise from lesion segment' to review a segmentation or to paint a lesion. "
            "Not for clinical use.")
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
    modelPath: Path = bundled_model_path()
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
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
        self._running = False
        self._cancelRequested = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SMILESynthesis.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SMILESynthesisLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.reviewButton.connect("clicked(bool)", self.onReviewButton)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChoice)
        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self):
        self._disconnect()  # before removeObservers: _disconnect removes its own observer
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._fillModelChoices()

    def exit(self):
        self._disconnect()

    def onSceneStartClose(self, caller, event):
        self._disconnect()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def _disconnect(self):
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def setParameterNode(self, inputParameterNode):
        self._disconnect()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _fillModelChoices(self):
        choices = model_choices() + [(_("Model file below"), "")]
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        try:  # signals are unblocked whatever happens
            self.ui.modelComboBox.clear()
            for label, path in choices:
                self.ui.modelComboBox.addItem(label, str(path))
        finally:
            self.ui.modelComboBox.blockSignals(wasBlocked)

    def onModelChoice(self, index):
        path = self.ui.modelComboBox.itemData(index)
        if path:
            self._parameterNode.modelPath = Path(path)

    def _updateButtons(self, caller=None, event=None):
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = hasInput or self._running
        self.ui.applyButton.text = _("Cancel") if self._running else _("Apply")
        self.ui.reviewButton.enabled = hasInput and bool(self._parameterNode.lesionSegmentation) and not self._running

    def onApplyButton(self):
        if self._running:
            self._cancelRequested = True
            return
        self._run(review=False)

    def onReviewButton(self):
        self._run(review=True)

    def _run(self, review):
        self._running, self._cancelRequested = True, False
        self._updateButtons()
        self.ui.progressBar.show()
        self.ui.progressBar.value = 0
        try:
            with slicer.util.tryWithErrorDisplay(_("SMILE synthesis failed."), waitCursor=True):
                self.logic.ensureDependencies()
                self.logic.process(self._parameterNode, review, progress=self._onProgress,
                                   cancel=lambda: self._cancelRequested)
                self.ui.statusLabel.text = _("Done.")
        finally:
            if self._cancelRequested:
                self.ui.statusLabel.text = _("Cancelled: no output was changed.")
            self._running = False
            self.ui.progressBar.hide()
            self._updateButtons()

    def _onProgress(self, done, total):
        self.ui.progressBar.maximum = total
        self.ui.progressBar.value = done
        slicer.app.processEvents()  # keeps the window responsive and lets Cancel be clicked


class SMILESynthesisLogic(ScriptedLoadableModuleLogic):
    """Application-level logic: parameter node, dependencies, views. The MRML work is done by
    SMILESynthesisLib.SynthesisLogic, which is tested outside the application."""

    def getParameterNode(self):
        return SMILESynthesisParameterNode(super().getParameterNode())

    def ensureDependencies(self):
        from SMILESynthesisLib.dependencies import ensure_dependencies
        ensure_dependencies(slicer.util.confirmOkCancelDisplay, testing=slicer.app.testingEnabled())

    def process(self, params, review=False, progress=None, cancel=None):
        from SMILESynthesisLib import SynthesisLogic, plan_outputs
        from smilecore.synthesis import SynthesisCancelled
        lib = SynthesisLogic(slicer.mrmlScene)
        model = lib.load_model(str(params.modelPath) if str(params.modelPath) not in ("", ".") else None,
                               params.device)
        wanted = {"pseudoNormal": params.makePseudoNormal, "lesion": params.makeLesion,
                  "difference": params.makeDifference, "pseudoAbnormal": params.makePseudoAbnormal}
        chosen = {"pseudoNormal": params.pseudoNormalVolume, "lesion": params.lesionSegmentation,
                  "difference": params.differenceVolume, "pseudoAbnormal": params.pseudoAbnormalVolume}
        mask = params.lesionSegmentation if review else None
        try:
            used = lib.run(params.inputVolume, model, plan_outputs(wanted, chosen), mask_segmentation=mask,
                           progress=progress, cancel=cancel)
        except SynthesisCancelled:
            return None
        params.pseudoNormalVolume = used.pseudoNormal or params.pseudoNormalVolume
        params.lesionSegmentation = used.lesion or params.lesionSegmentation
        params.differenceVolume = used.difference or params.differenceVolume
        params.pseudoAbnormalVolume = used.pseudoAbnormal or params.pseudoAbnormalVolume
        self.showSideBySide(params.inputVolume, used.pseudoNormal, used.lesion)
        return used

    @staticmethod
    def showSideBySide(inputVolume, pseudoNormal, lesion):
        """Input (left) and pseudo-normal (right) in linked axial views, lesion overlaid."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume in (("Red", inputVolume), ("Yellow", pseudoNormal or inputVolume)):
            composite = layoutManager.sliceWidget(viewName).mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetLinkedControl(True)
            layoutManager.sliceWidget(viewName).mrmlSliceNode().SetOrientationToAxial()
        if lesion is not None and lesion.GetDisplayNode():
            lesion.GetDisplayNode().SetVisibility(True)
            lesion.GetDisplayNode().SetOpacity2DFill(0.3)
        slicer.util.resetSliceViews()


class SMILESynthesisTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: bundled sample case -> synthesis -> nodes checked -> review."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_sample_case_synthesis_and_review()

    def test_sample_case_synthesis_and_review(self):
        from SMILESynthesisLib.dependencies import skip_test_without_engine
        skip_test_without_engine(self, slicer.app.testingEnabled())
        SMILESynthesisLogic().ensureDependencies()
        import numpy as np
        from SMILESynthesisLib import NEW, Outputs, SynthesisLogic, bundled_sample_paths, nodes
        self.delayDisplay("Loading the bundled sample case")
        image_path, _seg_path = bundled_sample_paths()
        volume = slicer.util.loadVolume(str(image_path))
        lib = SynthesisLogic(slicer.mrmlScene)
        model = lib.load_model(None, "auto")
        self.delayDisplay("Synthesising")
        used = lib.run(volume, model, Outputs(NEW, NEW, NEW, NEW))
        for node in (used.pseudoNormal, used.difference, used.pseudoAbnormal):
            self.assertTrue(np.allclose(nodes.ijk_to_ras(node), nodes.ijk_to_ras(volume)))
            self.assertEqual(node.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        mask = nodes.segmentation_to_mask(slicer.mrmlScene, used.lesion, volume)
        self.assertGreater(int(mask.sum()), 0, "the default model found no lesion in the sample case")
        self.delayDisplay("Re-synthesising from the lesion segment")
        again = lib.run(volume, model, Outputs(used.pseudoNormal, used.lesion, None, used.pseudoAbnormal),
                        mask_segmentation=used.lesion)
        pn = nodes.array_from_volume(again.pseudoNormal)[0]
        data = nodes.array_from_volume(volume)[0]
        self.assertTrue(np.array_equal(pn[~mask], data[~mask]))
        SMILESynthesisLogic.showSideBySide(volume, again.pseudoNormal, used.lesion)
        self.delayDisplay("SMILE synthesis test passed")
