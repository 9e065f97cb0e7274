"""The `slicer`, `qt` and `ctk` namespaces in which the modules' widget code runs outside the Slicer
application, and the only stand-ins it needs.

Real parts: MRML from the `slicer-core` wheel; Slicer's own Python (parameterNodeWrapper,
ScriptedLoadableModule, util, i18n, SampleData) and PyTorchUtils, unchanged, from
../shared/slicer-python (tag v5.10.0); Qt 5.15 widgets from PyQt5 (offscreen); the modules' .ui files,
read by PyQt5.uic.

Stand-ins, all in this file, each saying what it does not check: the CTK and qMRML widgets of the
.ui files, `slicer.app` (with its module manager), a module's parent objects (what Slicer's scripted
module loader passes), and the Plots module's logic. The PythonQt adapter below is not a stand-in for
a widget but for the binding: it gives PyQt5 objects PythonQt's attribute rules.
"""
from __future__ import annotations

import os
import sys
import types
import weakref
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


# ---- CTK and qMRML widget stand-ins -------------------------------------------------------------
class _Overloads:
    """A signal that .ui connections index by a C++ type (`mrmlSceneChanged(vtkMRMLScene*)`)."""

    def __init__(self, signal):
        self._signal = signal

    def __getitem__(self, cpp_type):
        return self._signal

    def connect(self, slot):
        self._signal.connect(slot)


def _hold(outer, inner):
    """A stand-in shows its state in a real Qt widget that fills it."""
    outer.setLayout(QtWidgets.QHBoxLayout())
    outer.layout().setContentsMargins(0, 0, 0, 0)
    outer.layout().addWidget(inner)
    return inner


class qMRMLWidget(QtWidgets.QWidget):
    """Passes the scene to its children through the .ui's connections. Not checked: anything else
    of qMRMLWidget (it has little else)."""
    _sceneChanged = QtCore.pyqtSignal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    @property
    def mrmlSceneChanged(self):
        return _Overloads(self._sceneChanged)

    def setMRMLScene(self, scene):
        self._scene = scene
        self._sceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qMRMLNodeComboBox(qMRMLWidget):
    """The node list and current node of Slicer's qMRMLNodeComboBox, held in a real QComboBox over a real
    QStandardItemModel, so that Qt's own rules for a first row, an inserted row and a removed current row
    apply, with the rules read from Slicer's source (Libs/MRML/Widgets/qMRMLNodeComboBox.cxx,
    qMRMLSortFilterProxyModel.cxx: filterAcceptsNode):
    - rows: "None" first when noneEnabled, the listed nodes in scene order, then a separator and the action
      items when add/remove/rename/edit is enabled; no row at all without a scene;
    - listed: nodes that IsA one of nodeTypes (subclasses included), of that class exactly when
      showChildNodeTypes is false, none that IsA one of hideChildNodeTypes (when showChildNodeTypes is true),
      none hidden from editors (showHidden false);
    - setMRMLScene: the current node of the previous scene if that scene listed nodes, else the node asked
      for before a scene was set, else the first row's node (with noneEnabled false: the first listed node);
    - a node added to a list without any row becomes current (QComboBox selects a first row), which happens
      with noneEnabled false and no action item;
    - the current node leaving the list: QComboBox takes the row now at its place (or the last row); a row
      that is not a node (separator, action) makes the last listed node current, as emitCurrentNodeChanged does;
    - setCurrentNode of a node not listed: no node (None, or no row when noneEnabled is false), silently.
    Not checked: the attribute filters, sorting, a listed node's later changes (name, attributes, hidden flag),
    the scene model's batch processing (scene close and import are followed one node at a time), what the
    action items do, nodeActivated, the real one's signal on a text change rather than an index change."""
    currentNodeChanged = QtCore.pyqtSignal(object)
    _ACTION = "ACTION"

    def __init__(self, parent=None):
        super().__init__(parent)
        self._types, self._hideChildTypes, self._showChildTypes, self._showHidden = [], [], True, False
        self._none, self._actions, self._requested, self._tags = False, set(), None, []
        self._combo = _hold(self, QtWidgets.QComboBox())
        self._model = QtGui.QStandardItemModel(self)  # deleted after the combo box, which then sends nothing
        self._combo.setModel(self._model)
        self._combo.currentIndexChanged.connect(self._emitCurrentNodeChanged)

    # -- properties as the .ui (setX) and parameterNodeWrapper (x = ...) set them
    def _option(name):  # noqa: N805 (a class-body helper)
        def set_(self, value):
            setattr(self, name, list(value) if isinstance(value, (list, tuple)) else value)
            self._rebuildExtras() if name == "_none" else self._sync()
        return property(lambda self: getattr(self, name), set_)
    nodeTypes, hideChildNodeTypes = _option("_types"), _option("_hideChildTypes")
    showChildNodeTypes, showHidden, noneEnabled = _option("_showChildTypes"), _option("_showHidden"), _option("_none")

    def setNodeTypes(self, value):
        self.nodeTypes = value

    def setHideChildNodeTypes(self, value):
        self.hideChildNodeTypes = value

    def setShowChildNodeTypes(self, value):
        self.showChildNodeTypes = bool(value)

    def setShowHidden(self, value):
        self.showHidden = bool(value)

    def setNoneEnabled(self, value):
        self.noneEnabled = bool(value)

    def _setAction(self, action, on):
        self._actions = (self._actions | {action}) if on else (self._actions - {action})
        self._rebuildExtras()

    def setAddEnabled(self, on):
        self._setAction("Add", on)

    def setRemoveEnabled(self, on):
        self._setAction("Remove", on)

    def setRenameEnabled(self, on):
        self._setAction("Rename", on)

    def setEditEnabled(self, on):
        self._setAction("Edit", on)

    # -- what is listed
    def accepts(self, node) -> bool:
        """qMRMLSortFilterProxyModel::filterAcceptsNode, less the attribute filters."""
        if node.GetHideFromEditors() and not self._showHidden:
            return False
        for node_type in self._types:
            if not node.IsA(node_type):
                continue
            if not self._showChildTypes and node_type != node.GetClassName():
                continue
            if self._showChildTypes and any(node.IsA(hidden) for hidden in self._hideChildTypes):
                return False
            return True
        return not self._types

    def _listed(self) -> list[str]:
        scene = self.mrmlScene()
        if scene is None:
            return []
        nodes = (scene.GetNthNode(k) for k in range(scene.GetNumberOfNodes()))
        return [node.GetID() for node in nodes if self.accepts(node)]

    def _ids(self) -> list[str]:
        return [self._model.item(row).data(QtCore.Qt.UserRole) for row in range(self._model.rowCount())]

    def _item(self, uid, text):
        item = QtGui.QStandardItem(text)
        item.setData(uid, QtCore.Qt.UserRole)
        return item

    def _nodeAt(self, row):
        scene = self.mrmlScene()
        uid = self._model.item(row).data(QtCore.Qt.UserRole) if 0 <= row < self._model.rowCount() else None
        return scene.GetNodeByID(uid) if scene is not None and uid not in (None, "", self._ACTION) else None

    def _sync(self):
        """The node rows follow the scene: rows of nodes no longer listed removed, new ones inserted in scene
        order, each through the model (so that QComboBox applies its rules)."""
        listed = self._listed()
        for row in reversed(range(self._model.rowCount())):
            uid = self._model.item(row).data(QtCore.Qt.UserRole)
            if uid not in ("", self._ACTION) and uid not in listed:
                self._model.removeRow(row)
        scene = self.mrmlScene()
        offset = 1 if self._none and scene is not None else 0
        for position, uid in enumerate(listed):
            if uid not in self._ids():
                self._model.insertRow(offset + position, self._item(uid, scene.GetNodeByID(uid).GetName()))

    def _rebuildExtras(self):
        """The "None" row and the action rows (updateNoneItem, updateActionItems): the current row is kept."""
        current = self.currentNodeID()
        blocked = self._combo.blockSignals(True)
        try:
            self._model.clear()
            if self.mrmlScene() is not None:
                if self._none:
                    self._model.appendRow(self._item("", "None"))
                for uid in self._listed():
                    self._model.appendRow(self._item(uid, self.mrmlScene().GetNodeByID(uid).GetName()))
                if self._actions:
                    for action in ["separator"] + sorted(self._actions):
                        self._model.appendRow(self._item(self._ACTION, action))
            self._combo.setCurrentIndex(self._rowOf(current))
        finally:
            self._combo.blockSignals(blocked)

    def _rowOf(self, uid):
        ids = self._ids()
        if uid and uid in ids:
            return ids.index(uid)
        return 0 if self._none and ids else -1

    # -- scene and current node
    def setMRMLScene(self, scene):
        if scene is self.mrmlScene():
            return
        previous, wasValid = self.currentNodeID(), self.nodeCount() > 0
        old = self.mrmlScene()
        for tag in self._tags:
            old.RemoveObserver(tag)
        super().setMRMLScene(scene)
        self._tags = [] if scene is None else [  # through a weak reference: a combo box gone is not called
            scene.AddObserver(event, _weakCall(self, "_sync")) for event in (scene.NodeAddedEvent,
                                                                              scene.NodeRemovedEvent)]
        blocked = self._combo.blockSignals(True)  # SceneSwitchingInProgress
        self._rebuildExtras()
        self._combo.setCurrentIndex(-1)
        self._combo.blockSignals(blocked)
        if wasValid:
            self.setCurrentNodeID(previous)
        else:
            first = self._ids()[0] if self._ids() else ""
            requested = self._requested.GetID() if self._requested is not None else None
            self.setCurrentNodeID(requested or ("" if first == self._ACTION else first))
        self._requested = None

    def nodeCount(self):
        return sum(1 for uid in self._ids() if uid not in ("", self._ACTION))

    def currentNode(self):
        return self._nodeAt(QtWidgets.QComboBox.currentIndex(self._combo))

    def currentNodeID(self):
        node = self.currentNode()
        return node.GetID() if node is not None else ""

    def setCurrentNode(self, node):
        if self.mrmlScene() is None:
            self._requested = node
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def setCurrentNodeID(self, uid):
        self._combo.setCurrentIndex(self._rowOf(uid))

    def _emitCurrentNodeChanged(self, row):
        """qMRMLNodeComboBox::emitCurrentNodeChanged: a row that is neither a node nor "None" (a separator
        or an action item that QComboBox moved to) makes the last listed node current."""
        node = self._nodeAt(row)
        if node is None and ((not self._none and row != -1) or (self._none and row != 0)):
            nodes = [uid for uid in self._ids() if uid not in ("", self._ACTION)]
            if nodes:
                self.setCurrentNodeID(nodes[-1])
            return
        self.currentNodeChanged.emit(node)


def _weakCall(obj, method):
    ref = weakref.ref(obj)

    def call(*args):
        target = ref()
        # not one being collected either (its attributes already cleared, its scene going)
        if target is not None and not sip.isdeleted(target) and "_scene" in vars(target):
            getattr(target, method)()
    return call


def _name_filters_pattern(name_filters) -> str:
    """The validator's pattern of a ctkPathLineEdit, as CTK builds it (ctkUtils.cpp,
    nameFiltersToRegExpPattern): "SMILE model (*.pt)" -> "(.*\\.pt?$)"; no usable filter -> ".+"."""
    import re
    parts = []
    for name_filter in name_filters:
        m = re.match(r"^(.*)\(([a-zA-Z0-9_.*? +;#\-\[\]@\{\}/!<>\$%&=^~:\|]*)\)$", name_filter)
        if m:
            extensions = m.group(2).split()
        else:
            extensions = [name_filter] if re.match(r"^[\w\s\.\*\_\~\$\[\]]+$", name_filter) else []
        for extension in extensions:
            e = re.search(r"\*\.(\w+)", extension)
            if e:
                parts.append(".*\\." + e.group(1) + "?$")
    return "(" + "|".join(parts) + ")" if parts else ".+"


class ctkPathLineEdit(QtWidgets.QWidget):
    """A path in a real QLineEdit with the validator CTK gives it (a QRegularExpressionValidator built
    from the name filters as ctkPathLineEditPrivate::updateFilter builds it). As in CTK
    (ctkPathLineEdit::updateHasValidInput), currentPathChanged is emitted on a text change only when
    the text is acceptable to the validator (an empty field never is), and validInputChanged when
    acceptability changes. Not checked: the browse dialog, the Files/Dirs filters (they steer the
    completer and the dialog, not the validator), path history, the completer, size policies."""
    Files, Dirs = 1, 2
    currentPathChanged = QtCore.pyqtSignal(str)
    validInputChanged = QtCore.pyqtSignal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._edit = _hold(self, QtWidgets.QLineEdit())
        self.filters, self.nameFilters = 0, []
        self._validator = QtGui.QRegularExpressionValidator(self)
        self._edit.setValidator(self._validator)
        self._hasValidInput = False
        self._updateFilter()
        self._edit.textChanged.connect(self._updateHasValidInput)

    def _updateFilter(self):
        self._validator.setRegularExpression(QtCore.QRegularExpression(_name_filters_pattern(self.nameFilters)))

    def setFilters(self, value):
        self.filters = value
        self._updateFilter()

    def setNameFilters(self, value):
        self.nameFilters = list(value)
        self._updateFilter()

    def _updateHasValidInput(self, text):
        old = self._hasValidInput
        self._hasValidInput = self._edit.hasAcceptableInput()
        if self._hasValidInput:
            self.currentPathChanged.emit(self.currentPath)
        if self._hasValidInput != old:
            self.validInputChanged.emit(self._hasValidInput)

    @property
    def currentPath(self):
        return QtWidgets.QLineEdit.text(self._edit)

    @currentPath.setter
    def currentPath(self, path):
        QtWidgets.QLineEdit.setText(self._edit, path)  # as ctkPathLineEdit::setCurrentPath: setText

    def setCurrentPath(self, path):
        self.currentPath = path

    def clearByUser(self):
        """What a user's select-all + Delete does: the line edit's text becomes empty."""
        self._edit.selectAll()
        self._edit.del_()


class ctkSliderWidget(QtWidgets.QWidget):
    """A double spin box with value/minimum/maximum/decimals/singleStep. Not checked: the slider,
    tracking, spin-box-only modes, synchronisation of the two."""
    valueChanged = QtCore.pyqtSignal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._spin = _hold(self, QtWidgets.QDoubleSpinBox())
        self._spin.valueChanged[float].connect(self.valueChanged)

    def _forward(name):  # noqa: N805 (a class-body helper)
        return property(lambda self: QtCore.QObject.property(self._spin, name),
                        lambda self, v: QtCore.QObject.setProperty(self._spin, name, v))
    value, minimum, maximum, decimals, singleStep = map(_forward, ("value", "minimum", "maximum", "decimals",
                                                                   "singleStep"))

    def setValue(self, v):
        self.value = v

    def setMinimum(self, v):
        self.minimum = v

    def setMaximum(self, v):
        self.maximum = v

    def setDecimals(self, v):
        self.decimals = v

    def setSingleStep(self, v):
        self.singleStep = v


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """A titled container. Not checked: collapsing, the collapsed property, its animation."""

    def setText(self, text):
        self.setTitle(text)


class _AbsentWidget(QtWidgets.QWidget):
    """CTK/qMRML classes that parameterNodeWrapper names in its type checks and no .ui here uses."""


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
    for name in ("ctkPathLineEdit", "ctkSliderWidget", "ctkCollapsibleButton"):
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
