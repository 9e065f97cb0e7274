"""MRML nodes <-> arrays for the engine. Imports slicer at the MRML level only (what the
`slicer-core` wheel provides), never qt.

Arrays given to the engine are in IJK order (i, j, k) with the node's IJK-to-RAS matrix as the
affine, which is exactly a NIfTI image's convention, so `smilecore` sees a volume node the way
it sees a file. `slicer.util.arrayFromVolume` is KJI-ordered; the transposes live here only.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk
from slicer import util as su

from .i18n import tr as _

LESION_SEGMENT_NAME = "Lesion"
LESION_COLOR = (0.85, 0.2, 0.2)
# "Neoplasm" (SCT 108369006, category Morphologically Altered Structure) is listed in Slicer's
# "DICOM master list" context (Terminologies/Resources/SegmentationCategoryTypeModifier-DICOM-Master.json),
# not in the General Anatomy list, which would show it as an unknown entry.
LESION_TERMINOLOGY = ("Segmentation category and type - DICOM master list"
                      "~SCT^49755003^Morphologically Altered Structure"
                      "~SCT^108369006^Neoplasm~^^~Anatomic codes - DICOM master list~^^~^^")


def ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def array_from_volume(node, role: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 array in IJK order, IJK-to-RAS affine) of a scalar volume node; `role` names it in the
    message of an empty node (default: the input)."""
    if node is None or node.GetImageData() is None:
        raise ValueError(_("the {role} volume node holds no image data").format(role=role or _("input")))
    if node.GetParentTransformNode() is not None:
        raise ValueError(_("volume '{name}' is under a transform; harden it first (Data module: right-click the "
                           "transform, Harden transform)").format(name=node.GetName()))
    data = np.asarray(su.arrayFromVolume(node), dtype=np.float32).transpose(2, 1, 0)
    return np.ascontiguousarray(data), ijk_to_ras(node)


def volume_from_array(scene, array_ijk: np.ndarray, reference, name: str, node=None,
                      class_name: str = "vtkMRMLScalarVolumeNode", display: bool = False):
    """Fill `node` (or a new node of `class_name`) with an IJK array on the reference's grid. With
    `display`, a node without display node gets the default ones (so that it shows in the views)."""
    if node is None:
        node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    if display and node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    su.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(array_ijk).transpose(2, 1, 0)))
    node.CopyOrientation(reference)
    return node


def mask_to_segmentation(scene, mask_ijk: np.ndarray, reference, segmentation=None,
                         name: str = "SMILE lesion"):
    """Put a binary mask into a segmentation node as the single segment "Lesion" (replacing its
    content if the node exists), with a terminology entry and colour."""
    if segmentation is None:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
        segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    segmentation.GetSegmentation().RemoveAllSegments()
    labelmap = volume_from_array(scene, (np.asarray(mask_ijk) > 0).astype(np.uint8), reference,
                                 "SMILE lesion labelmap", class_name="vtkMRMLLabelMapVolumeNode")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            raise RuntimeError(_("importing the lesion mask into the segmentation failed"))
    finally:
        scene.RemoveNode(labelmap)
    seg = segmentation.GetSegmentation()
    if seg.GetNumberOfSegments() == 0:
        # An empty mask imports no segment; keep an empty "Lesion" for the user to paint in. Built
        # by hand because AddEmptySegment needs converter rules the application registers.
        empty = slicer.vtkSegment()
        empty.SetName(LESION_SEGMENT_NAME)
        empty.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(),
                                slicer.vtkOrientedImageData())
        seg.AddSegment(empty)
    segment = seg.GetNthSegment(0)
    segment.SetName(LESION_SEGMENT_NAME)
    segment.SetColor(*LESION_COLOR)
    segment.SetTag(segment.GetTerminologyEntryTagName(), LESION_TERMINOLOGY)
    return segmentation


def segmentation_to_mask(scene, segmentation, reference, segment_id: str | None = None) -> np.ndarray:
    """Binary IJK mask (on the reference volume's grid) of one segment, or of all segments."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)  # the application always has one
    existing = {scene.GetNthNode(k).GetID() for k in range(scene.GetNumberOfNodes())}
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    try:
        ids = vtk.vtkStringArray()
        seg = segmentation.GetSegmentation()
        for k in range(seg.GetNumberOfSegments()):
            sid = seg.GetNthSegmentID(k)
            if segment_id is None or sid == segment_id:
                ids.InsertNextValue(sid)
        if ids.GetNumberOfValues() == 0:
            raise ValueError(_("segmentation '{name}' has no segment to use as lesion mask").format(
                name=segmentation.GetName()))
        if not logic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, reference):
            raise RuntimeError(_("exporting the lesion segment to a labelmap failed"))
        mask = np.asarray(su.arrayFromVolume(labelmap)).transpose(2, 1, 0) > 0
    finally:  # the labelmap and what the export made for it (display node, colour table): the scene is unchanged
        added = [scene.GetNthNode(k) for k in range(scene.GetNumberOfNodes())]
        for node in [n for n in added if n.GetID() not in existing]:
            scene.RemoveNode(node)
    return np.ascontiguousarray(mask)


def place_next_to(scene, node, reference):
    """Put `node` in the same subject-hierarchy folder/study as `reference`."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    invalid = sh.GetInvalidItemID()
    reference_item = sh.GetItemByDataNode(reference)
    parent = sh.GetItemParent(reference_item) if reference_item != invalid else sh.GetSceneItemID()
    item = sh.GetItemByDataNode(node)
    if item == invalid:  # the application adds items itself; a bare scene does not
        sh.CreateItem(parent, node)
    else:
        sh.SetItemParent(item, parent)


def show_side_by_side(layout_manager, input_volume, pseudo_normal, lesion):
    """Input (left) and pseudo-normal (right) in linked axial views of the application's layout manager
    (none outside the application: nothing to show), lesion overlaid."""
    if layout_manager is None:
        return
    layout_manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
    for view_name, volume in (("Red", input_volume), ("Yellow", pseudo_normal or input_volume)):
        view = layout_manager.sliceWidget(view_name)
        view.mrmlSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
        view.mrmlSliceCompositeNode().SetLinkedControl(True)
        view.mrmlSliceNode().SetOrientationToAxial()
    if lesion is not None and lesion.GetDisplayNode():
        lesion.GetDisplayNode().SetVisibility(True)
        lesion.GetDisplayNode().SetOpacity2DFill(0.3)
    layout_manager.resetSliceViews()
