"""A synthesis in a background process: the panel stays responsive, Cancel kills the process at once,
and the scene changes only when the result is complete. MRML level only (no qt); the engine is
imported only by the worker process (worker.py).

    job = SynthesisJob(logic, volume, outputs, model="default", device="auto").start()
    # then, from a timer:
    job.poll()              # progress (job.done / job.total), notes (job.notes), job.state
    if job.state == FINISHED: used = job.finish()   # the output nodes are written here, only here
    job.cancel()            # the process tree is killed; nothing was written

States: RUNNING, FINISHED (the worker wrote every result array; not yet in the scene), DONE (the
result is in the scene), FAILED (`job.error` says why), CANCELLED.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from .background import BackgroundProcess, default_python
from .i18n import tr as _
from .logic import NEW, RESULT_NAMES, Outputs, SynthesisLogic, model_file, no_flair_segmentor
from .worker import EVENT_PREFIX

RUNNING, FINISHED, DONE, FAILED, CANCELLED = "running", "finished", "done", "failed", "cancelled"
WORKER = Path(__file__).resolve().parent / "worker.py"
log = logging.getLogger("SMILESynthesis")


class SynthesisJob:
    def __init__(self, logic: SynthesisLogic, input_volume, outputs: Outputs, model: str | Path | None = None,
                 device: str = "auto", mask_segmentation=None, segment_id=None, brain_mask=None,
                 modality: str | None = None, python: str | None = None, flair_volume=None,
                 flair_optional: bool = False):
        self.logic, self.input_volume, self.outputs = logic, input_volume, outputs
        self.model, self.device, self.modality = model_file(model), device, modality
        self.mask_segmentation, self.segment_id, self.brain_mask = mask_segmentation, segment_id, brain_mask
        self.flair_volume = flair_volume  # optional: read and sent to the worker as the input is
        self.flair_optional = flair_optional  # a model without S_flair then runs without it (a batch), not refused
        self.python = python or default_python()
        self.process: BackgroundProcess | None = None
        self.folder: Path | None = None
        self.state: str | None = None
        self.done, self.total = 0, 0
        self.notes: list[str] = []
        self.log: list[str] = []
        self.error: str | None = None
        self.used: Outputs | None = None
        self.lesion_ml: float | None = None  # the lesion mask's volume, once finished
        self.segmentor: str | None = None  # the segmentor that ran ("S" or "S_t2", or "S_flair" with a FLAIR), once finished

    def start(self):
        """Read the inputs from the nodes (refusing bad ones before anything starts), write them for
        the worker and start it."""
        import numpy as np
        if not self.model.is_file():
            raise FileNotFoundError(_("model file not found: {path}").format(path=self.model))
        given = self.logic.inputs(self.input_volume, self.outputs, self.mask_segmentation, self.segment_id,
                                  self.brain_mask, self.flair_volume)
        if given["flair"] is not None:  # the FLAIR's array and its own affine, as the input's
            given["flair_data"], given["flair_affine"] = given["flair"]
        self.folder = Path(tempfile.mkdtemp(prefix="smile-synthesis-"))
        try:
            for name in ("data", "affine", "mask", "brain", "flair_data", "flair_affine"):
                if given.get(name) is not None:
                    np.save(self.folder / f"{name}.npy", given[name])
            (self.folder / "job.json").write_text(json.dumps(
                {"model": str(self.model), "device": self.device, "modality": self.modality,
                 "name": given["name"], "where": given["where"], "flair_name": given["flair_name"],
                 "flair_where": given["flair_where"], "flair_optional": self.flair_optional}))
            self.process = BackgroundProcess([self.python, str(WORKER), str(self.folder)]).start()
        except BaseException:
            self._remove_folder()
            raise
        self.state = RUNNING
        return self

    def poll(self) -> list[dict]:
        """Read the worker's new events and output (call it from a timer). A worker that ended
        without "done" or "error" is a failure that says how it ended."""
        if self.state != RUNNING:
            return []
        alive = self.process.running  # before reading: what it wrote before it ended is read below
        events = []
        for line in self.process.output_lines():
            if line.startswith(EVENT_PREFIX):
                try:
                    events.append(json.loads(line[len(EVENT_PREFIX):]))
                    continue
                except ValueError:
                    pass
            self.log.append(line)
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                self.done, self.total = event["done"], event["total"]
            elif kind == "note":
                self.notes.append(event["message"])
                log.warning("SMILE synthesis: %s", event["message"])
            elif kind == "done":
                self.state, self.segmentor = FINISHED, event.get("segmentor")
            elif kind == "error":  # a FLAIR the model cannot take: the panel's own line, not the CLI's
                no_flair = event.get("type") == "NoFlairSegmentor"
                self._fail(no_flair_segmentor(self.model) if no_flair else f"{event.get('message')}")
        if self.state == RUNNING and not alive:
            tail = "\n".join(self.log[-10:])
            message = _("the synthesis process ended without a result (exit code {code})").format(
                code=self.process.returncode)
            self._fail(f"{message}:\n{tail}" if tail else message)
        return events

    def _fail(self, message: str):
        self.state, self.error = FAILED, message
        log.error("SMILE synthesis failed: %s", message)
        self._remove_folder()

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def cancel(self) -> bool:
        """Kill the worker and everything it started. True if the job was still running: then no
        node was changed."""
        if self.state not in (RUNNING, FINISHED):
            return False
        if self.process is not None:
            self.process.stop()
        self.state = CANCELLED
        self._remove_folder()
        return True

    def finish(self) -> Outputs:
        """Write the finished result into the output nodes (the only place the scene changes)."""
        import numpy as np
        if self.state != FINISHED:
            raise RuntimeError(_("the synthesis is {state}, not finished").format(state=self.state))
        try:
            arrays = {name: np.load(self.folder / f"out_{name}.npy", allow_pickle=False) for name in RESULT_NAMES}
            self.used = self.logic.write_outputs(self.input_volume, arrays, self.outputs, self.mask_segmentation)
            voxel_mm3 = float(np.prod(self.input_volume.GetSpacing()))
            self.lesion_ml = float(np.count_nonzero(arrays["lesion_mask"])) * voxel_mm3 / 1000.0
            self.logic.notes = list(self.notes)
            self.state = DONE
        except Exception as exc:
            self._fail(str(exc))
            raise
        finally:
            self._remove_folder()
        return self.used

    def _remove_folder(self):
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


__all__ = ["CANCELLED", "DONE", "FAILED", "FINISHED", "NEW", "RUNNING", "SynthesisJob"]
