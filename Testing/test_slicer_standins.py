"""The stand-ins held to the real widgets' rules (issue 22, 9) and the panels under them; the catalog
screenshot (issue 22, 10). Shared helpers and the `slicer` fixture: slicer_widget_helpers.py."""
import numpy as np

from slicer_widget_helpers import ROOT, _panel, slicer, standins  # noqa: F401 (slicer: the fixture)


# ---- the stand-ins as strict as the real widgets (issue 22, 9) ---------------------------------------------
def _combo(scene, types, **options):
    combo = standins.qMRMLNodeComboBox()
    combo.setNodeTypes(types)
    for name, value in options.items():
        getattr(combo, "set" + name[0].upper() + name[1:])(value)
    if scene is not None:
        combo.setMRMLScene(scene)
    return combo


def test_the_node_combo_box_stand_in_lists_and_selects_as_slicers(slicer):
    """The rules of qMRMLNodeComboBox.cxx and qMRMLSortFilterProxyModel.cxx (Slicer v5.10.0), over a real
    QComboBox: filters by IsA, showChildNodeTypes, hideChildNodeTypes and the hidden flag; the first listed
    node selected when None is not enabled; a removed current node replaced as QComboBox replaces a row."""
    scene = slicer.vtkMRMLScene()
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hidden").SetHideFromEditors(True)
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    scalar = ["vtkMRMLScalarVolumeNode"]
    exact = _combo(scene, scalar, showChildNodeTypes=False)
    assert exact.nodeCount() == 1 and exact.currentNode() is image  # labels not listed, hidden not listed
    assert _combo(scene, scalar).currentNode() is labels  # subclasses listed (IsA), first one selected
    assert _combo(scene, scalar, hideChildNodeTypes=["vtkMRMLLabelMapVolumeNode"]).currentNode() is image
    assert _combo(scene, scalar, noneEnabled=True).currentNode() is None
    changes = []
    exact.currentNodeChanged.connect(changes.append)
    exact.setCurrentNode(labels)  # not listed: no node, silently
    assert exact.currentNode() is None and changes == [None]

    empty = slicer.vtkMRMLScene()
    plain, with_actions = _combo(empty, scalar), _combo(empty, scalar, addEnabled=True)
    first = empty.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "first")
    assert plain.currentNode() is first  # QComboBox selects a first row
    assert with_actions.currentNode() is None  # the action rows were there first: nothing selected
    empty.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "second")
    assert plain.currentNode() is first

    outputs = slicer.vtkMRMLScene()
    a, b, c = (outputs.AddNewNodeByClass("vtkMRMLScalarVolumeNode", n) for n in "abc")
    output = _combo(outputs, scalar, noneEnabled=True, addEnabled=True, renameEnabled=True)
    output.setCurrentNode(b)
    outputs.RemoveNode(b)
    assert output.currentNode() is c  # the row now at its place
    outputs.RemoveNode(c)
    assert output.currentNode() is a  # its place is the separator: the last listed node
    later = _combo(None, scalar)
    later.setCurrentNode(a)  # asked for before the scene is set
    later.setMRMLScene(outputs)
    assert later.currentNode() is a


def test_the_synthesis_panel_under_the_strict_stand_ins(slicer):
    """What the stricter qMRMLNodeComboBox stand-in exposed: a label map first in the scene was taken as the
    input (the real selector lists scalar volumes only and showed none); a deleted output node was replaced,
    as the real selector does, by another volume, which the next Apply would have overwritten."""
    scene = slicer.mrmlScene
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image")
    _, widget = _panel(slicer, "SMILESynthesis")
    ui, params = widget.ui, widget._parameterNode
    assert params.inputVolume is image and ui.inputVolumeSelector.currentNode() is image
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another case")
    output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "image pseudo-normal")
    ui.pseudoNormalSelector.setCurrentNode(output)
    assert params.pseudoNormalVolume is output
    scene.RemoveNode(output)
    assert params.pseudoNormalVolume is None and ui.pseudoNormalSelector.currentNode() is None
    assert other is not None and params.inputVolume is image and standins.slot_errors == []
    widget.cleanup()


def test_the_catalog_screenshot_is_a_result_beside_the_panel():
    """Issue 22, 10: the PNG named by the screenshot URL (CMakeLists.txt, SMILE.s4ext) is what
    scripts/catalog_screenshot.py writes: the panel (light) left, the overview of a run on the bundled
    case (brain slices on black) right, under 300 KB. The one before showed the panel alone, "Cancelled"."""
    import re

    from PIL import Image
    url = re.search(r'EXTENSION_SCREENSHOTURLS "([^"]+)"', (ROOT / "CMakeLists.txt").read_text())[1]
    s4ext = (ROOT / "SMILE.s4ext").read_text()
    assert f"screenshoturls {url}\n" in s4ext
    path = ROOT / url.split("/main/", 1)[1]
    assert path.is_file() and path.stat().st_size < 300 * 1024
    grey = np.asarray(Image.open(path).convert("L"), float)
    height, width = grey.shape
    panel, figure = grey[: int(height * 0.8), : int(width * 0.4)], grey[: int(height * 0.8), int(width * 0.55):]
    assert (panel > 200).mean() > 0.5 and (figure < 16).mean() > 0.3
    assert 0.05 < ((figure > 60) & (figure < 250)).mean()  # grey tissue, not an empty black box


def test_the_path_line_edit_stand_in_emits_a_path_only_when_ctks_validator_accepts_it(slicer):
    """Issue 22, 4, the stand-in's own rule (ctkPathLineEdit::updateHasValidInput, Slicer v5.10's CTK):
    currentPathChanged only for a text the validator accepts, never for an empty field; validInputChanged
    when acceptability changes. The pattern is CTK's for "SMILE model (*.pt)": "(.*\\.pt?$)", which also
    accepts a name ending in ".p"."""
    field = standins.ctkPathLineEdit()
    field.setNameFilters(["SMILE model (*.pt)"])
    paths, valid = [], []
    field.currentPathChanged.connect(paths.append)
    field.validInputChanged.connect(valid.append)
    field.currentPath = "/models/a.pt"
    field.currentPath = "/models/a.nii.gz"  # not a model: no path, no longer valid
    field.currentPath = "/models/b.p"  # CTK's "pt?" takes it
    field.clearByUser()  # select all, Delete
    assert paths == ["/models/a.pt", "/models/b.p"] and valid == [True, False, True, False]
    assert field.currentPath == ""
    anything = standins.ctkPathLineEdit()  # no name filter: CTK's ".+", so only "" is refused
    anything.currentPathChanged.connect(paths.append)
    anything.currentPath = "x"
    anything.currentPath = ""
    assert paths[2:] == ["x"]
