"""Training events: one JSON object per line in ``<out>/events.jsonl``.

The CLI's progress bar and the Slicer trainer module both read these; docs/EVENTS.md is the
schema. Every event has ``event`` (its kind), ``time`` (Unix seconds) and ``version``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

EVENTS_VERSION = 1
PHASE_NAMES = {1: "G+S adversarial", 2: "R alone (G, S frozen)", 3: "R+S adversarial",
               4: "G, S, R together"}


class EventLog:
    """Appends events to a JSON-lines file (flushed per line, so a reader can follow it live)
    and passes each to an optional callback."""

    def __init__(self, path: str | Path | None, callback=None):
        self.path = Path(path) if path else None
        self.callback = callback
        self._fh = open(self.path, "a", encoding="utf-8") if self.path else None

    def emit(self, event: str, **fields) -> dict:
        record = {"event": event, "time": round(time.time(), 3), "version": EVENTS_VERSION, **fields}
        if self._fh:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
        if self.callback:
            self.callback(record)
        return record

    def close(self):
        if self._fh:
            self._fh.close()
            self._fh = None


def read_events(path: str | Path) -> list[dict]:
    """All complete events in a log (a partly written last line is ignored)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class ProgressBar:
    """A tqdm bar driven by training events (the CLI's view of a run)."""

    def __init__(self):
        from tqdm import tqdm
        self._tqdm = tqdm
        self.bar = None

    def __call__(self, e: dict):
        kind = e["event"]
        if kind == "start":
            self.bar = self._tqdm(total=e["total_steps"], initial=e.get("global_step", 0), unit="step",
                                  dynamic_ncols=True)
        elif kind == "prepare" and e.get("total"):
            if e["done"] == e["total"]:
                self._tqdm.write(f"prepared {e['total']} cases (slice cache)")
        elif kind == "step" and self.bar is not None:
            self.bar.update(e["global_step"] - self.bar.n)
            losses = " ".join(f"{k}={v:.3g}" for k, v in e["losses"].items())
            self.bar.set_description(f"P{e['phase']} E{e['epoch'] + 1}/{e['epochs']}")
            self.bar.set_postfix_str(f"{losses} eps={e['eps']:.3f} pl={e['pseudo_label_share']:.3f}", refresh=False)
        elif kind == "epoch" and self.bar is not None:
            val = " ".join(f"{k}={v:.3g}" for k, v in e.get("val", {}).items())
            self.bar.write(f"phase {e['phase']} ({e['phase_name']}) epoch {e['epoch'] + 1}/{e['epochs']}: "
                           f"eps={e['eps']:.3f} pseudo-label share={e['pseudo_label_share']:.4f} {val}")
        elif kind in ("done", "error", "stopped") and self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_callback(desc: str, unit: str = "step"):
    """A (done, total) callback that draws a tqdm bar (Spred training, synthesis, ...)."""
    from tqdm import tqdm
    bar = tqdm(desc=desc, unit=unit, dynamic_ncols=True)

    def update(done, total):
        bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update
