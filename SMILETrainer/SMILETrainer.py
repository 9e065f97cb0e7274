import os
import sys
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(_CHECKOUT, "smilecore")) and _CHECKOUT not in sys.path:
    sys.path.append(_CHECKOUT)


class SMILETrainer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SMILE Trainer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SMILESynthesis"]
        self.parent.contributors = ["SMILE developers (SlicerSMILE)"]
        self.parent.helpText = _(
            "Trains a SMILE model (generator, segmentor, reconstructor) in four phases on a folder of BraTS "
            "cases, with a share of the cases used without their labels (semi-supervised). Training runs "
            "in a separate process; Stop leaves a checkpoint that Resume continues from. The finished model "
            "is offered by SMILE Synthesis. See the "
            '<a href="https://github.com/smile-slicer/SlicerSMILE/blob/main/docs/training.md">training '
            "documentation</a>.")
        self.parent.acknowledgementText = _("SMILE: semi-supervised pseudo-normality synthesis.")


# smilecore.train.LR_SCHEDULES (a test checks they agree): the engine imports torch, which module
# start-up must not need.
LR_SCHEDULES = ("constant", "cosine")


# Ranges as in the .ui: without them connectGui widens the spin boxes to the whole int/float range.
@parameterNodeWrapper
class SMILETrainerParameterNode:
    dataDir: Path = Path.home() / "SMILE" / "data"
    modality: Annotated[str, Choice(["t2", "flair", "t1", "t1ce"])] = "t2"
    labeledFraction: Annotated[float, WithinRange(0.0, 1.0)] = 1.0
    epochs: Annotated[int, WithinRange(1, 1000)] = 10
    batchSize: Annotated[int, WithinRange(1, 512)] = 8
    learningRate: Annotated[float, WithinRange(1e-6, 0.1)] = 1e-4
    lrSchedule: Annotated[str, Choice(list(LR_SCHEDULES))] = "constant"
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    outputDir: Path = Path.home() / "SMILE" / "run"


class SMILETrainerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._timer = qt.QTimer()
        self._timer.setInterval(1000)
        self._timer.connect("timeout()", self.onTimer)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SMILETrainer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SMILETrainerLogic()
        self.ui.startButton.connect("clicked(bool)", lambda: self.onStart(resume=False))
        self.ui.resumeButton.connect("clicked(bool)", lambda: self.onStart(resume=True))
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self):
        """Also when Slicer closes: a training left running would go on without a window."""
        self._timer.stop()
        self.logic.lib.stop()
        self._disconnect()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self._disconnect()

    def onSceneStartClose(self, caller, event):
        self._disconnect()

    def onSceneEndClose(self, caller, event):
        """A training still running fills a table in the new scene, with every epoch so far, and
        shows its plot again."""
        if self.parent.isEntered:
            self.initializeParameterNode()
        if self.logic.lib.active:
            self.logic.showPlot()

    def initializeParameterNode(self):
        self._disconnect()
        self._parameterNode = self.logic.getParameterNode()
        self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
        # The summary follows the parameter node, which the GUI has updated by then (a slot on the
        # path or combo box could run before connectGui's and read the previous folder or modality).
        self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParametersChanged)
        self.onParametersChanged()

    def _disconnect(self):
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParametersChanged)

    def onParametersChanged(self, caller=None, event=None):
        self.ui.datasetInfoLabel.text = self.logic.describeDataset(self._parameterNode)

    def onStart(self, resume):
        with slicer.util.tryWithErrorDisplay(_("Could not start training."), waitCursor=True):
            self.logic.ensureDependencies()
            self.onParametersChanged()  # a summary that needed a package just installed is made again
            self.logic.start(self._parameterNode, resume)
            self.ui.logTextEdit.clear()
            self.logic.showPlot()
            self._timer.start()
        self._updateButtons()

    def onStop(self):
        self.logic.lib.stop()
        self.ui.logTextEdit.appendPlainText(_("Stopped. Resume continues from the last checkpoint."))
        self.onTimer()

    def onTimer(self):
        lib = self.logic.lib
        lib.poll()
        for line in lib.log[self.logic.shownLogLines:]:
            self.ui.logTextEdit.appendPlainText(line)
        self.logic.shownLogLines = len(lib.log)
        phase, overall, text = self.logic.progress()
        self.ui.phaseProgressBar.value = phase
        self.ui.overallProgressBar.value = overall
        self.ui.statusLabel.text = text
        if not lib.active:  # ended, and everything it wrote has been read
            self._timer.stop()
            if lib.finished and lib.finished["event"] == "error":
                self.ui.statusLabel.text = _("Training failed.")
                slicer.util.errorDisplay(_("Training failed: {message}").format(message=lib.finished["message"]),
                                         detailedText="\n".join(lib.log[-50:]))
        self._updateButtons()

    def _updateButtons(self):
        running = self.logic.lib.running
        self.ui.startButton.enabled = not running
        self.ui.resumeButton.enabled = not running
        self.ui.stopButton.enabled = running


class SMILETrainerLogic(ScriptedLoadableModuleLogic):
    """Application-level logic: parameter node -> settings, progress text, plot view. The process
    and MRML work is SMILETrainerLib.TrainerLogic, tested outside the application."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from SMILETrainerLib import TrainerLogic
        self.lib = TrainerLogic(slicer.mrmlScene)
        self.shownLogLines = 0
        self._described = (None, "")

    def getParameterNode(self):
        return SMILETrainerParameterNode(super().getParameterNode())

    def ensureDependencies(self):
        from SMILESynthesisLib.dependencies import ensure_dependencies
        ensure_dependencies(slicer.util.confirmOkCancelDisplay, testing=slicer.app.testingEnabled())

    @staticmethod
    def settings(params):
        from SMILETrainerLib import TrainingSettings
        if str(params.outputDir) in ("", "."):
            raise ValueError(_("Choose an output folder for the training run."))
        return TrainingSettings(data_dir=str(params.dataDir), out_dir=str(params.outputDir),
                                modality=params.modality, labeled_fraction=params.labeledFraction,
                                epochs=params.epochs, batch_size=params.batchSize, lr=params.learningRate,
                                lr_schedule=params.lrSchedule, device=params.device)

    def describeDataset(self, params):
        """Summary of the chosen folder; scanned again only when the folder or modality changes. A
        summary that cannot be made yet (nibabel is installed on first Start) is not kept."""
        folder = str(params.dataDir)
        if folder in ("", ".") or not os.path.isdir(folder):
            return _("Choose a folder of BraTS cases.")
        if self._described[0] != (folder, params.modality):
            from SMILETrainerLib import scan_dataset
            try:
                text = scan_dataset(folder, params.modality).summary()
            except ImportError as exc:
                return _("The dataset summary needs {package}, which Start installs (with your consent).").format(
                    package=getattr(exc, "name", None) or str(exc))
            except Exception as exc:
                text = str(exc)
            self._described = ((folder, params.modality), text)
        return self._described[1]

    def start(self, params, resume=False):
        self.shownLogLines = 0
        self.lib.start(self.settings(params), resume=resume)  # Slicer's own python (process.default_python)

    def progress(self):
        """(phase %, overall %, status text) from the last step event."""
        e = self.lib.last_step
        if e is None:
            return 0, 0, _("Preparing data...") if self.lib.running else ""
        in_phase = (e["epoch"] * e["steps_per_epoch"] + e["step"]) / max(e["epochs"] * e["steps_per_epoch"], 1)
        overall = e["global_step"] / max(e["total_steps"], 1)
        text = _("Phase {phase} ({name}), epoch {epoch}/{epochs}; eps {eps:.3f}, pseudo-label share {share:.4f}; "
                 "about {minutes:.0f} min left").format(
            phase=e["phase"], name=e["phase_name"], epoch=e["epoch"] + 1, epochs=e["epochs"], eps=e["eps"],
            share=e["pseudo_label_share"], minutes=e["eta_s"] / 60)
        if self.lib.finished is not None and self.lib.finished["event"] == "done":
            text = _("Done. Model registered for SMILE Synthesis: {model}").format(model=self.lib.finished["model"])
        return int(100 * in_phase), int(100 * overall), text

    def showPlot(self):
        table, chart = self.lib.ensure_plot_nodes()  # made again if the scene was closed
        slicer.modules.plots.logic().ShowChartInLayout(chart)


class SMILETrainerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: a tiny real training on a generated cohort, followed to the end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_tiny_training()

    def test_tiny_training(self):
        from SMILESynthesisLib.dependencies import skip_test_without_engine
        skip_test_without_engine(self, slicer.app.testingEnabled())
        SMILETrainerLogic().ensureDependencies()
        savedHome = os.environ.get("SMILE_HOME")
        try:
            self._tinyTraining()
        finally:  # the user's model list stays untouched, whatever happened
            if savedHome is None:
                os.environ.pop("SMILE_HOME", None)
            else:
                os.environ["SMILE_HOME"] = savedHome

    def _tinyTraining(self):
        import tempfile
        import time
        from SMILETrainerLib import TrainerLogic, TrainingSettings
        from smilecore.synthetic import write_cohort
        folder = Path(tempfile.mkdtemp())
        os.environ["SMILE_HOME"] = str(folder / "home")
        write_cohort(folder / "data", n_cases=5, shape=(32, 32, 12), unlabeled=1)
        self.delayDisplay(_("Training a tiny model in a background process"))
        lib = TrainerLogic(slicer.mrmlScene)
        lib.start(TrainingSettings(str(folder / "data"), str(folder / "run"), labeled_fraction=0.5, epochs=1,
                                   batch_size=2, base=4, depth=2, steps_per_epoch=2, device="cpu",
                                   extra=["--split", "0.6,0.2,0.2"]))
        deadline = time.time() + 300
        while lib.finished is None and time.time() < deadline:
            slicer.app.processEvents()
            lib.poll()
            time.sleep(0.2)
        self.assertIsNotNone(lib.finished, "training did not finish in time")
        self.assertEqual(lib.finished["event"], "done", "\n".join(lib.log))
        self.assertEqual(lib.table.GetTable().GetNumberOfRows(), 4)
        self.delayDisplay(_("SMILE trainer test passed"))
