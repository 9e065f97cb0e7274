"""Batch synthesis: the model on many cases in turn, each in its own background process (a
SynthesisJob), with per-case progress, Cancel, and a summary table node. MRML level only (no qt);
the panel calls `poll()` from its timer.

    batch = BatchRun(logic, loaded_cases(scene), wanted, model="default").start()
    # then, from a timer:
    batch.poll()      # batch.index / batch.count, batch.job (slice progress), batch.state
    batch.cancel()    # the running case is killed; batch.not_done names the cases not done

A case that fails (an unreadable file, a refused input, a worker that dies) is a row of the table
with its error, and the batch goes on with the next case. The cases done keep their outputs when the
batch is cancelled; the cases not done are rows that say so.

FLAIR (issue 23, item 3): a case's FLAIR is found by name, as BraTS names them (`X_t2` and `X_flair`,
`X-t2w` and `X-t2f`: smilecore.cases.case_and_modality), among the batch's own files or volumes
(`with_flairs`). It is then that case's FLAIR, not a case of its own (run as one, a T2 model would refuse
it as not a T2), and the case runs with it when the model has a FLAIR segmentor (S_flair); with a model
without one, the case runs from its T2 alone and its row says the FLAIR was not used (the panel does not
load the model before a run: panel.py). A FLAIR whose name matches no case, or a name that two volumes
share, pairs with nothing. The panel's FLAIR selector is for Apply, not for a batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from .i18n import tr as _
from .job import CANCELLED, DONE, FAILED, FINISHED, RUNNING, SynthesisJob
from .logic import NEW, OUTPUT_ATTRIBUTE, OUTPUT_ROLES, Outputs, SynthesisLogic

COLUMNS = ("case", "lesion volume (mL)", "time (s)", "notes")  # data: scripts read them, left untranslated
NUMERIC_COLUMNS = (1, 2)
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr")


@dataclass
class Case:
    name: str
    volume: object = None      # a volume node of the scene,
    path: Path | None = None   # or a file, read into the scene when its turn comes
    flair: Case | None = None  # the same case's FLAIR (with_flairs), a volume or a file


def loaded_cases(scene, exclude=()) -> list[Case]:
    """Every scalar volume of the scene (that class exactly: label maps are not images), except the
    outputs SMILE wrote (they carry OUTPUT_ATTRIBUTE), nodes hidden from the user, and `exclude`."""
    cases = []
    for k in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(k, "vtkMRMLScalarVolumeNode")
        if (node.GetClassName() != "vtkMRMLScalarVolumeNode" or node.GetAttribute(OUTPUT_ATTRIBUTE)
                or node.GetHideFromEditors() or any(node is other for other in exclude if other is not None)):
            continue
        cases.append(Case(node.GetName(), volume=node))
    return cases


def first_input_volume(scene):
    """The volume a panel opened on this scene takes as input: the first of `loaded_cases`, or None."""
    return next((case.volume for case in loaded_cases(scene)), None)


def folder_cases(folder: str | Path) -> list[Case]:
    """Every image file directly in `folder`, by name (subfolders are not searched)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(_("batch folder not found: {folder}").format(folder=folder))
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ValueError(_("no image file ({suffixes}) in batch folder {folder}").format(
            suffixes=", ".join(IMAGE_SUFFIXES), folder=folder))
    return [Case(case_name(p), path=p) for p in files]


def with_flairs(cases: list[Case]) -> list[Case]:
    """The cases, each FLAIR whose T2 is among them (same case name, BraTS suffixes) taken out and
    given to that T2 as its `flair`. A name that two cases share pairs with nothing."""
    from smilecore.cases import case_and_modality  # numpy only; the engine's torch stays out
    named = [case_and_modality(case.name) for case in cases]
    count = {}
    for key in named:
        count[key] = count.get(key, 0) + 1
    t2 = {key[0]: case for case, key in zip(cases, named) if key and key[1] == "t2" and count[key] == 1}
    kept = []
    for case, key in zip(cases, named):
        if key and key[1] == "flair" and key[0] in t2 and count[key] == 1:
            t2[key[0]].flair = case
        else:
            kept.append(case)
    return kept


def case_name(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def read_volume(scene, path: Path, name: str):
    """A volume file into a new scalar volume node (with display nodes); ValueError names the file."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)  # this file only, not a series of similar names beside it
    if not storage.ReadData(node) or node.GetImageData() is None:
        scene.RemoveNode(storage)
        scene.RemoveNode(node)
        raise ValueError(_("{path}: not readable as a volume").format(path=path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node


class BatchRun:
    def __init__(self, logic: SynthesisLogic, cases: list[Case], wanted: dict[str, bool], model=None,
                 device: str = "auto", python: str | None = None, name: str = "SMILE batch summary"):
        if not cases:
            raise ValueError(_("no case to run the batch on"))
        self.logic, self.cases, self.wanted = logic, list(cases), dict(wanted)
        self.model, self.device, self.python, self.name = model, device, python, name
        self.index = -1
        self.job: SynthesisJob | None = None
        self.state: str | None = None
        self.table = None
        self.rows: list[dict] = []
        self.not_done: list[str] = []
        self._started = 0.0

    @property
    def count(self) -> int:
        return len(self.cases)

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def case(self) -> Case | None:
        return self.cases[self.index] if 0 <= self.index < self.count else None

    @property
    def failed(self) -> list[str]:
        return [row["case"] for row in self.rows if row["failed"]]

    def fraction(self) -> float:
        """How much of the batch is done, from 0 to 1 (cases done, and slices of the running case)."""
        part = self.job.done / self.job.total if self.job is not None and self.job.total else 0.0
        return min(1.0, (max(self.index, 0) + part) / self.count)

    def start(self):
        scene = self.logic.scene
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(self.name))
        self.table.SetAttribute(OUTPUT_ATTRIBUTE, "batchSummary")
        for k, title in enumerate(COLUMNS):
            column = self.table.AddColumn(_double_array() if k in NUMERIC_COLUMNS else None)
            column.SetName(title)
        self.state = RUNNING
        self._next()
        return self

    def _next(self):
        """Start the next case that starts; a case that cannot start is a row with its error."""
        outputs = Outputs(**{role: NEW if self.wanted.get(role) else None for role in OUTPUT_ROLES})
        while self.index + 1 < self.count:
            self.index += 1
            case, self._started = self.cases[self.index], time.monotonic()
            try:
                for read in (case, case.flair):
                    if read is not None and read.volume is None:
                        read.volume = read_volume(self.logic.scene, read.path, read.name)
                flair = case.flair.volume if case.flair is not None else None
                self.job = SynthesisJob(self.logic, case.volume, outputs, model=self.model, device=self.device,
                                        python=self.python, flair_volume=flair, flair_optional=True).start()
                return
            except Exception as exc:  # noqa: BLE001 (every failure of a case is reported in its row)
                self.job = None
                self._row(case, error=str(exc))
        self.job, self.state = None, DONE

    def poll(self):
        """Follow the running case; when it ends, its row is written and the next case starts."""
        if self.state != RUNNING or self.job is None:
            return
        job, case = self.job, self.case
        job.poll()
        if job.state == FINISHED:
            try:
                job.finish()
                self._row(case, lesion_ml=job.lesion_ml, notes=job.notes)
            except Exception as exc:  # noqa: BLE001
                self._row(case, error=str(exc))
            self._next()
        elif job.state == FAILED:
            self._row(case, error=job.error or "")
            self._next()

    def cancel(self) -> bool:
        """Kill the running case; the cases not done (it and those after it) are rows that say so.
        True if the batch was running."""
        if self.state != RUNNING:
            return False
        if self.job is not None:
            self.job.cancel()
            self.job = None
        self.not_done = [case.name for case in self.cases[max(self.index, 0):]]
        for case in self.cases[max(self.index, 0):]:
            self._row(case, note=_("not done: the batch was cancelled"))
        self.state = CANCELLED
        return True

    def _row(self, case: Case, lesion_ml=None, notes=(), error=None, note=None):
        seconds = None if note else time.monotonic() - self._started
        first_line = (error or "").strip().splitlines()[:1] or [_("no message")]
        failure = [_("failed: {error}").format(error=first_line[0])] if error is not None else []
        text = "; ".join(list(notes) + failure + ([note] if note else []))
        self.rows.append({"case": case.name, "lesion_ml": lesion_ml, "seconds": seconds, "notes": text,
                          "failed": error is not None})
        table = self.table.GetTable()
        row = self.table.AddEmptyRow()
        for k, value in enumerate((case.name, lesion_ml, seconds, text)):
            if k in NUMERIC_COLUMNS:
                table.GetColumn(k).SetValue(row, math.nan if value is None else round(float(value), 3))
            else:
                table.GetColumn(k).SetValue(row, value)
        self.table.Modified()


def _double_array():
    import vtk
    return vtk.vtkDoubleArray()


__all__ = ["COLUMNS", "Case", "BatchRun", "CANCELLED", "DONE", "first_input_volume", "folder_cases",
           "loaded_cases", "read_volume", "with_flairs"]
