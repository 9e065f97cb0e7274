"""The `slicer`, `qt` and `ctk` namespaces in which the modules' widget code runs outside the Slicer
application, and the only stand-ins it needs.

Real parts: MRML from the `slicer-core` wheel; Slicer's own Python (parameterNodeWrapper,
ScriptedLoadableModule, util, i18n, SampleData) and PyTorchUtils, unchanged, from
../shared/slicer-python (tag v5.10.0); Qt 5.15 widgets from PyQt5 (offscreen); the modules' .ui files,
read by PyQt5.uic.

Stand-ins, each saying what it does not check: the CTK and qMRML widgets of the .ui files (in
slicer_widget_standins.py), `slicer.app` (with its module manager), a module's parent objects (what
Slicer's scripted module loader passes), and the Plots module's logic. The PythonQt adapter below is not a stand-in for
a widget but for the binding: it gives PyQt5 objects PythonQt's attribute rules.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PyQt5 import QtCore, QtGui, QtWidgets, sip, uic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SLICER_PYTHON = ROOT.parent / "shared" / "slicer-python"
MODULES = ("SMILESynthesis", "SMILETrainer")


# ---- PythonQt adapter ----------------------------------------------------------------------
# PythonQt, not PyQt, binds Qt in Slicer. Its rules that Slicer's and the modules' code rely on:
# a Qt property reads and writes as an attribute (`button.enabled = False`, `spinBox.value`), also
# where a method of the same name exists; `name` is the objectName; `obj.connect("clicked(bool)", f)`
# connects by signature; a Qt object is true while it exists (PyQt: an empty combo box is false).
# Not checked: PythonQt's argument conversions (QVariant, enums, vtk object pointers in signals),
# its error messages, its rule of calling a slot with fewer arguments (PyQt has a similar one), its
# handling of slot exceptions (printed; here recorded in `slot_errors`).
_getattribute, _setattr = QtCore.QObject.__getattribute__, QtCore.QObject.__setattr__
_qt_properties: dict[type, frozenset] = {}
_pythonqt = [True]  # off while PyQt5.uic builds a .ui: uic expects PyQt's rules
slot_errors: list[BaseException] = []
_ARG_TYPES = {"bool": bool, "int": int, "double": float, "QString": str}


def _properties(obj) -> frozenset:
    cls = type(obj)
    if cls not in _qt_properties:
        meta = QtCore.QObject.metaObject(obj)
        _qt_properties[cls] = frozenset(meta.property(i).name() for i in range(meta.propertyCount()))
    return _qt_properties[cls]


def _get(self, name):
    if _pythonqt[0] and name[0] != "_":
        if name in _properties(self):
            return QtCore.QObject.property(self, name)
        if name == "name":
            return QtCore.QObject.objectName(self)
    return _getattribute(self, name)


def _set(self, name, value):
    if _pythonqt[0] and name in _properties(self):
        if not QtCore.QObject.setProperty(self, name, value):
            raise AttributeError(f"{type(self).__name__}.{name} cannot be set to {value!r}")
    else:
        _setattr(self, name, value)


def _signal(obj, signature: str):
    name, args = signature.rstrip(")").split("(")
    signal = getattr(obj, name)
    types_ = tuple(_ARG_TYPES.get(a.strip(), object) for a in args.split(",") if a.strip())
    try:
        return signal[types_] if types_ else signal
    except (KeyError, TypeError):  # a signal without overloads
        return signal


def _record_slot_error(kind, value, tb):
    slot_errors.append(value)
    sys.__excepthook__(kind, value, tb)


def install_pythonqt_rules():
    QtCore.QObject.__getattribute__ = _get
    QtCore.QObject.__setattr__ = _set
    QtCore.QObject.__bool__ = lambda self: not sip.isdeleted(self)
    QtCore.QObject.connect = lambda self, signature, slot: _signal(self, signature).connect(slot)
    QtCore.QObject.disconnect = lambda self, signature, slot: _signal(self, signature).disconnect(slot)
    sys.excepthook = _record_slot_error  # PyQt aborts on a slot's exception without an excepthook


class QUiLoader(QtCore.QObject):
    """qt.QUiLoader as slicer.util.loadUI uses it. Slicer's loader is Qt's own with the CTK and qMRML
    designer plugins; PyQt5.uic reads the same .ui. Not checked: Qt Designer plugin metadata."""

    def load(self, qfile, parent=None):
        _pythonqt[0] = False
        try:
            return uic.loadUi(qfile.fileName())
        finally:
            _pythonqt[0] = True


# ---- CTK and qMRML widget stand-ins: slicer_widget_standins.py ---------------------------------
from slicer_widget_standins import (_AbsentWidget, ctkCollapsibleButton, ctkMessageBox,  # noqa: E402, F401
                                    ctkPathLineEdit, ctkSliderWidget, qMRMLNodeComboBox, qMRMLWidget)


# ---- slicer.app and what Slicer's module loader passes --------------------------------------------
class ModuleManager(QtCore.QObject):
    """qSlicerModuleManager: the modules loaded, and the signal that makes a widget clean up. Not
    checked: module discovery, dependencies, loading order."""
    moduleAboutToBeUnloaded = QtCore.pyqtSignal(str)

    def __init__(self):
        super().__init__()
        self.modules = {}

    def module(self, name):
        return self.modules.get(name)


class SliceWidget:
    """A slice view of the layout manager: its slice node and slice composite node are real MRML nodes of
    the scene, named and laid out by the view's name (Red, Yellow, Green), as Slicer's are."""

    def __init__(self, name):
        self.name = name

    def _node(self, class_name):
        import slicer
        scene = slicer.mrmlScene
        for k in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(k, class_name)
            if node.GetLayoutName() == self.name:
                return node
        node = scene.CreateNodeByClass(class_name)
        node.SetName(self.name)
        node.SetLayoutName(self.name)
        scene.AddNode(node)
        return node

    def mrmlSliceNode(self):
        return self._node("vtkMRMLSliceNode")

    def mrmlSliceCompositeNode(self):
        return self._node("vtkMRMLSliceCompositeNode")


class LayoutManager:
    """slicer.app.layoutManager(): records the layouts set (`layouts`) and each resetSliceViews call
    (`resets`); sliceWidget(name) gives views whose MRML nodes are real (SliceWidget). Not checked: the
    views themselves, rendering, which views a layout shows, an unknown view name (Slicer returns None)."""

    def __init__(self):
        self.layouts, self.resets = [], 0

    def setLayout(self, layout):
        self.layouts.append(layout)

    def sliceWidget(self, name):
        return SliceWidget(name)

    def resetSliceViews(self):
        self.resets += 1


class SlicerApp(QtCore.QObject):
    """slicer.app. Not checked: the main window, the views behind the layout manager (LayoutManager), IO
    manager, settings panels, the application's own start-up sequence (a test emits startupCompleted)."""
    startupCompleted = QtCore.pyqtSignal()
    applicationName = "Slicer"

    def __init__(self, testing=False):
        super().__init__()
        self.testing = testing
        self._moduleManager = ModuleManager()
        self._layoutManager = LayoutManager()

    def testingEnabled(self):
        return self.testing

    def moduleManager(self):
        return self._moduleManager

    def layoutManager(self):
        return self._layoutManager

    def processEvents(self, *flags):
        QtWidgets.QApplication.processEvents()

    def translate(self, context, text):
        return QtCore.QCoreApplication.translate(context, text)

    def topLevelWidgets(self):
        return QtWidgets.QApplication.topLevelWidgets()

    def setOverrideCursor(self, cursor):
        QtWidgets.QApplication.setOverrideCursor(cursor)

    def restoreOverrideCursor(self):
        QtWidgets.QApplication.restoreOverrideCursor()


class ModuleParent(QtCore.QObject):
    """qSlicerScriptedLoadableModule: what a module's __init__ fills in. Not checked: how Slicer shows
    the title, categories, help and icon."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)
        self.title = self.helpText = self.acknowledgementText = ""
        self.categories, self.dependencies, self.contributors, self.icon = [], [], [], None


class WidgetParent(qMRMLWidget):
    """qSlicerScriptedLoadableModuleWidget: the panel the widget fills; isEntered while shown. Not
    checked: the module panel around it (help section, scroll area)."""

    def __init__(self):
        super().__init__()
        self.setLayout(QtWidgets.QVBoxLayout())
        self.isEntered = False


class PlotsLogic:
    """slicer.modules.plots.logic(): records the chart it is asked to show. Not checked: the layout
    switch and the plot view."""

    def __init__(self):
        self.shown = []

    def ShowChartInLayout(self, chart):
        self.shown.append(chart)


# ---- assembling the namespaces --------------------------------------------------------------------
_OWN_PREFIXES = ("qt", "ctk", "SMILESynthesis", "SMILETrainer", "SampleData", "PyTorchUtils")
_HEADER_MODULES = ("qMRMLWidget", "qMRMLNodeComboBox", "ctkPathLineEdit", "ctkSliderWidget", "ctkCollapsibleButton")


_keep = []


def _ours(module_name):
    top = module_name.split(".")[0]
    return top in _OWN_PREFIXES + _HEADER_MODULES or module_name.startswith("slicer.")


def assemble(scene=None, testing=False):
    """Make `import slicer, qt, ctk` give the namespaces described above; returns a function that
    puts everything back (the logic tests in the same run use the wheel's own slicer.util)."""
    import slicer  # the slicer-core wheel
    saved_modules = {k: v for k, v in sys.modules.items() if _ours(k)}
    saved_slicer, saved_slicer_path, saved_path = dict(vars(slicer)), list(slicer.__path__), list(sys.path)
    for name in saved_modules:
        del sys.modules[name]
    QtCore.QCoreApplication.setOrganizationName("SMILE-widget-tests")  # never the user's Slicer settings
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["SMILE widget tests"])
    _keep.append(app)  # a QApplication collected by Python takes Qt's GUI with it
    app.setQuitOnLastWindowClosed(False)
    install_pythonqt_rules()

    qt = types.ModuleType("qt")
    for module in (QtCore, QtGui, QtWidgets):
        qt.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    qt.QUiLoader = QUiLoader
    this = sys.modules[__name__]
    ctk = types.ModuleType("ctk")
    for name in ("ctkPathLineEdit", "ctkSliderWidget", "ctkCollapsibleButton", "ctkMessageBox"):
        setattr(ctk, name, getattr(this, name))
    for name in ("ctkCheckBox", "ctkCheckablePushButton", "ctkComboBox", "ctkDoubleSlider", "ctkDoubleSpinBox",
                 "ctkRangeWidget", "ctkDoubleRangeSlider", "ctkDirectoryButton", "ctkColorPickerButton"):
        setattr(ctk, name, type(name, (_AbsentWidget,), {}))
    sys.modules.update(qt=qt, ctk=ctk)
    for name in _HEADER_MODULES:  # PyQt5.uic imports a custom widget from the module named by its header
        sys.modules[name] = this

    slicer.__path__.insert(0, str(SLICER_PYTHON / "slicer"))  # Slicer's own util, i18n, ... before the wheel's
    slicer.qMRMLWidget, slicer.qMRMLNodeComboBox = qMRMLWidget, qMRMLNodeComboBox
    for name in ("qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget"):
        setattr(slicer, name, type(name, (_AbsentWidget,), {}))
    slicer.app = SlicerApp(testing)
    import slicer.util  # noqa: F401  (Slicer's own util.py)
    import slicer.i18n  # noqa: F401
    import slicer.parameterNodeWrapper  # noqa: F401
    import slicer.ScriptedLoadableModule  # noqa: F401
    assert Path(slicer.util.__file__).is_relative_to(SLICER_PYTHON)
    plots_logic = PlotsLogic()
    slicer.modules = types.SimpleNamespace(plots=types.SimpleNamespace(logic=lambda: plots_logic))
    slicer.mrmlScene = scene if scene is not None else slicer.vtkMRMLScene()
    sys.path[:0] = [str(ROOT / m) for m in MODULES] + [str(SLICER_PYTHON / "SampleData"),
                                                      str(SLICER_PYTHON / "PyTorchUtils")]

    def restore():
        for name in [k for k in sys.modules if _ours(k)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path
        slicer.__path__[:] = saved_slicer_path
        vars(slicer).clear()
        vars(slicer).update(saved_slicer)
    return restore


def load_module(name):
    """What Slicer's scripted module loader does: import the module file, make the module object with
    a parent, list it in the module manager and in slicer.modules."""
    import importlib

    import slicer
    module_file = importlib.import_module(name)
    parent = ModuleParent(ROOT / name / f"{name}.py")
    module = getattr(module_file, name)(parent)
    slicer.app.moduleManager().modules[name] = parent
    setattr(slicer.modules, name.lower(), parent)
    return module_file, module


def make_widget(module_file, name):
    """The module panel as Slicer makes it when the user first opens the module: setup(), then enter()."""
    parent = WidgetParent()
    widget = getattr(module_file, f"{name}Widget")(parent)
    widget.setup()
    parent.isEntered = True
    widget.enter()
    return widget, parent
