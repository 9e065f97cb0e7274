"""The CTK and qMRML widgets of the modules' .ui files, as stand-ins on real Qt widgets (PyQt5): each says
in its docstring what it does not check. slicer_standins.py puts them into the `slicer` and `ctk`
namespaces and gives them PythonQt's attribute rules."""
from __future__ import annotations

import os
import weakref

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
from PyQt5 import QtCore, QtGui, QtWidgets, sip  # noqa: E402


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
    apply, with the rules read from Slicer's source at v5.10.0 (Libs/MRML/Widgets/qMRMLNodeComboBox.cxx,
    qMRMLSortFilterProxyModel.cxx: filterAcceptsNode; the same rules in main at 583e9b3):
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
    action items do, nodeActivated. (v5.10.0 follows the current index, as this one does; main since follows
    the current text, so that there another node of the same name changes nothing.)"""
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
        if getattr(self, "_removal", None) is not None:   # the old scene's observers are gone already
            self.destroyed.disconnect(self._removal)
        self._removal = None
        if scene is not None:  # as the real one's destructor does (qvtkReconnect): no observer outlives it
            self._removal = _removing_observers(scene, list(self._tags))
            self.destroyed.connect(self._removal)
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


def _removing_observers(scene, tags):
    """A slot for `destroyed` that holds no reference to the widget (it is already gone when it runs)."""
    def remove(*args):
        for tag in tags:
            scene.RemoveObserver(tag)
    return remove


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


class ctkMessageBox(QtWidgets.QMessageBox):
    """A real QMessageBox (what slicer.util.messageBox shows: its text, buttons and exec_()). Not checked:
    the "Don't show again" check box and its settings key, which the modules do not use."""


class _AbsentWidget(QtWidgets.QWidget):
    """CTK/qMRML classes that parameterNodeWrapper names in its type checks and no .ui here uses."""
