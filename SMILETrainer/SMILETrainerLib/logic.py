"""SMILETrainer module logic: check a dataset folder, start/stop/resume a training process, and
turn its events into MRML table and plot nodes. MRML level only (no qt)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from SMILESynthesisLib.i18n import tr as _

from .process import EventFollower, TrainingProcess

# Table columns filled from each epoch event; loss terms are added as they appear.
FIXED_COLUMNS = ("global epoch", "phase", "epoch", "eps", "pseudo-label share", "val dice S")


@dataclass
class DatasetReport:
    folder: str
    modality: str
    cases: list[str] = field(default_factory=list)
    labeled: list[str] = field(default_factory=list)
    unlabeled: list[str] = field(default_factory=list)
    missing_modality: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # case -> what is wrong
    folder_problem: str | None = None                     # the folder itself cannot be used

    @property
    def usable(self) -> bool:
        return (self.folder_problem is None and bool(self.labeled) and not self.problems
                and not self.missing_modality)

    def summary(self) -> str:
        if self.folder_problem:
            return self.folder_problem
        if not self.cases:
            return _("No BraTS cases found in {folder} (expected files like <case>/<case>_t2.nii.gz "
                     "or <case>/<case>-t2w.nii.gz).").format(folder=self.folder)
        lines = [_("{count} cases found in {folder}: {labelled} labelled, {unlabelled} unlabelled.").format(
            count=len(self.cases), folder=self.folder, labelled=len(self.labeled), unlabelled=len(self.unlabeled))]
        if self.missing_modality:
            lines.append(_("No {modality} image in: {cases}").format(modality=self.modality,
                                                                     cases=", ".join(self.missing_modality)))
        for case, problem in self.problems.items():
            lines.append(f"{case}: {problem}")
        if not self.labeled and self.cases:
            lines.append(_("No labelled case: training needs at least one segmentation."))
        return "\n".join(lines)


def scan_dataset(folder: str | Path, modality: str = "t2") -> DatasetReport:
    """What a dataset folder holds, from file names and NIfTI headers only (fast, no voxels read)."""
    import nibabel as nib
    import numpy as np
    from smilecore.cases import canonical_modality, find_cases
    modality = canonical_modality(modality)
    report = DatasetReport(str(folder), modality)
    try:
        cases = find_cases(folder)
    except OSError as exc:
        report.folder_problem = str(exc)
        return report
    for case in cases:
        report.cases.append(case.case_id)
        (report.labeled if case.labeled else report.unlabeled).append(case.case_id)
        if modality not in case.images:
            report.missing_modality.append(case.case_id)
            continue
        name = case.images[modality].name
        try:
            image = nib.load(str(case.images[modality]))
            shape = image.shape
            while len(shape) > 3 and shape[-1] == 1:
                shape = shape[:-1]
            if len(shape) != 3:
                report.problems[case.case_id] = f"{name} is not a 3D volume {image.shape}"
            elif np.dtype(image.get_data_dtype()).kind == "c":
                report.problems[case.case_id] = f"{name} holds complex values"
            elif case.seg is not None:
                name = case.seg.name
                seg = nib.load(str(case.seg))
                if seg.shape != image.shape or not np.allclose(seg.affine, image.affine, atol=1e-3):
                    report.problems[case.case_id] = f"{case.seg.name} is not on the grid of its image"
        except Exception as exc:
            text = " ".join(str(exc).split())
            report.problems[case.case_id] = f"{name} is unreadable ({type(exc).__name__}: {text})"
    return report


@dataclass
class TrainingSettings:
    data_dir: str
    out_dir: str
    modality: str = "t2"
    labeled_fraction: float = 1.0
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"   # one of smilecore.train.LR_SCHEDULES
    device: str = "auto"
    base: int = 32
    depth: int = 4
    crop: int | None = None
    steps_per_epoch: int | None = None
    extra: list[str] = field(default_factory=list)

    def cli_args(self, resume: bool = False) -> list[str]:
        args = [self.data_dir, "--out", self.out_dir, "--quiet", "--device", self.device]
        if resume:
            return args + ["--resume"]
        args += ["--modality", self.modality, "--labeled-fraction", str(self.labeled_fraction),
                 "--epochs", str(self.epochs), "--batch-size", str(self.batch_size), "--lr", str(self.lr),
                 "--lr-schedule", self.lr_schedule, "--base", str(self.base), "--depth", str(self.depth)]
        if self.crop:
            args += ["--crop", str(self.crop)]
        if self.steps_per_epoch:
            args += ["--steps-per-epoch", str(self.steps_per_epoch)]
        return args + list(self.extra)


class TrainerLogic:
    def __init__(self, scene):
        self.scene = scene
        self.process: TrainingProcess | None = None
        self.follower: EventFollower | None = None
        self.table = None
        self.chart = None
        self.last_step: dict | None = None
        self.finished: dict | None = None      # the "done" or "error" event
        self.registered: dict | None = None
        self.log: list[str] = []
        self.epochs: list[dict] = []            # the epoch events of this run (the table is made from them)

    # ---- process ----------------------------------------------------------------------
    def start(self, settings: TrainingSettings, resume: bool = False, python: str | None = None):
        if self.process is not None and self.process.running:
            raise RuntimeError(_("a training is already running"))
        report = scan_dataset(settings.data_dir, settings.modality)
        if not report.usable:
            raise ValueError(_("the dataset cannot be used for training:\n{summary}").format(summary=report.summary()))
        out = Path(settings.out_dir)
        if resume and not (out / "checkpoint.pt").is_file():
            raise FileNotFoundError(_("nothing to resume: no checkpoint in {folder}").format(folder=out))
        out.mkdir(parents=True, exist_ok=True)
        self.follower = EventFollower(out / "events.jsonl")
        self.follower.read_new()  # skip events of earlier runs in this folder
        self.finished = self.registered = self.last_step = None
        self.stopped_by_user = self._drained = False
        self.epochs = []
        self.plot_name = Path(settings.out_dir).name
        self.process = TrainingProcess(settings.cli_args(resume), python=python).start()
        self.table = self.chart = None
        self.ensure_plot_nodes()
        return self.process

    def stop(self):
        if self.process is not None:
            self.stopped_by_user = self.process.running or self.stopped_by_user
            self.process.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    @property
    def active(self) -> bool:
        """True until a poll after the process ended has read all it wrote (events and output)."""
        return self.process is not None and not self._drained

    def poll(self) -> list[dict]:
        """Read new events and output; fill the table; register the model when done. Call
        periodically (the widget uses a timer). Whether the process still runs is read first, so that
        the poll that sees it ended also reads its last events and output lines; a process that ended
        without "done", "error" or "stopped" (and was not stopped here) becomes an "error" event
        (`finished`) with its exit code and last output lines."""
        if self.follower is None:
            return []
        alive = self.process is not None and self.process.running
        events = self.follower.read_new()
        if self.process is not None:
            self.log += self.process.output_lines()
        for e in events:
            if e["event"] == "step":
                self.last_step = e
            elif e["event"] == "epoch":
                self.epochs.append(e)
                self.add_epoch_row(e)
            elif e["event"] in ("done", "error", "stopped"):
                self.finished = e
                if e["event"] == "done":
                    from smilecore.registry import register_model
                    self.registered = register_model(e["model"])
        if self.process is not None and not alive:
            self._drained = True
            if self.finished is None and not self.stopped_by_user:
                tail = "\n".join(self.log[-10:])
                message = _("the training process ended without reporting why (exit code {code})").format(
                    code=self.process.returncode)
                last = _("its last output:")
                self.finished = {"event": "error", "message": f"{message}; {last}\n{tail}" if tail else message}
        return events

    _drained = False
    stopped_by_user = False
    plot_name = "SMILE training"

    # ---- MRML ------------------------------------------------------------------------
    def ensure_plot_nodes(self, name: str | None = None):
        """The table and chart of this run, made again (with every epoch so far) when they are not in
        the scene: after File > Close Scene during a training, the plot comes back in the new scene."""
        if self.table is not None and self.scene.IsNodePresent(self.table) and self.chart is not None \
                and self.scene.IsNodePresent(self.chart):
            return self.table, self.chart
        name = name or self.plot_name
        self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} losses")
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} chart")
        self.chart.SetTitle("SMILE training: loss terms and eps per epoch")
        self.chart.SetXAxisTitle("epoch (all phases)")
        for column in FIXED_COLUMNS:
            self._add_column(column)
        for e in self.epochs:
            self._add_row(e)
        return self.table, self.chart

    def _add_column(self, name: str):
        import vtk
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfTuples(self.table.GetNumberOfRows())
        column.Fill(float("nan"))
        self.table.AddColumn(column)
        if name not in FIXED_COLUMNS[:3]:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("global epoch")
            series.SetYColumnName(name)
            series.SetPlotType(series.PlotTypeScatter)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return column

    def add_epoch_row(self, e: dict):
        if self.table is None or not self.scene.IsNodePresent(self.table):
            self.ensure_plot_nodes()  # made again with every epoch so far, this one included
            return
        self._add_row(e)

    def _add_row(self, e: dict):
        table = self.table.GetTable()
        values = {"global epoch": table.GetNumberOfRows() + 1, "phase": e["phase"], "epoch": e["epoch"] + 1,
                  "eps": e["eps"], "pseudo-label share": e["pseudo_label_share"],
                  "val dice S": e.get("val", {}).get("dice_S", float("nan"))}
        values.update(e.get("losses", {}))
        for name in values:
            if table.GetColumnByName(name) is None:
                self._add_column(name)
        row = table.InsertNextBlankRow(float("nan"))
        for name, value in values.items():
            table.SetValueByName(row, name, float(value))
        table.Modified()
        self.table.Modified()
