"""The synthesis worker: runs in a background process started by job.py (``<python> worker.py <folder>``)
and is the only place of the synthesis module that imports the engine (torch, nibabel).

The folder holds the job (job.json: model file, device, stated modality, the input's name and the
FLAIR's) and its arrays as .npy files written by job.py (data, affine, and the optional lesion mask and
brain mask, in the input node's IJK order; the optional FLAIR as flair_data and flair_affine, its own
node's IJK order and IJK-to-RAS, which synthesize resamples onto the input's grid). The worker loads
the model, checks the modality (and that the model takes a FLAIR, if one is given: an error of type
NoFlairSegmentor before any work; a job whose FLAIR is optional, a batch case's, then runs without it
and says so in a note), runs smilecore.synthesis.synthesize and writes the result arrays
as .npy files into the same folder.
It reports on stdout, one event a line, each `EVENT_PREFIX` + JSON:
``{"event": "progress", "done": k, "total": n}`` after each slice, ``{"event": "note", "message": ...}``
for each engine note (oblique input, skull, thick slices, out-of-memory fallback), then
``{"event": "done", "notes": [...], "segmentor": "S", "S_t2" or "S_flair"}`` once every output file is written, or
``{"event": "error", "type": ..., "message": ...}``. Anything else on stdout is log output.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

EVENT_PREFIX = "SMILE-EVENT "
RESULT_ARRAYS = ("pseudo_normal", "lesion_mask", "difference", "pseudo_abnormal")


def emit(event: str, **fields):
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


def run(folder: Path) -> None:
    import numpy as np

    from smilecore.flair import check_flair_name, require_flair
    from smilecore.modelfile import load_model
    from smilecore.synthesis import check_modality, synthesize
    from smilecore.train import resolve_device

    job = json.loads((folder / "job.json").read_text())

    def optional(name):
        path = folder / f"{name}.npy"
        return np.load(path, allow_pickle=False) if path.is_file() else None

    device = resolve_device(job["device"])
    model = load_model(job["model"], device)
    check_modality(model, stated=job.get("modality"), name=job["name"], where=job["where"])
    flair, notes = optional("flair_data"), []
    if flair is not None and model.flair is None and job.get("flair_optional"):
        notes.append(f"the {job['flair_where']} was not used: the model has no FLAIR segmentor")
        emit("note", message=notes[-1])
        flair = None
    if flair is not None:
        require_flair(model)
        check_flair_name(job["flair_name"], job["flair_where"])
        flair = (flair, optional("flair_affine"))
    # One slice a batch on the CPU, so that progress moves slice by slice (slices are independent:
    # the result is the same for any batch size); an accelerator runs 16 slices in well under 0.5 s.
    batch_size = 1 if device.type == "cpu" else 16
    result = synthesize(optional("data"), optional("affine"), model, mask=optional("mask"),
                        batch_size=batch_size, where=job["where"], brain=optional("brain"), flair=flair,
                        flair_where=job.get("flair_where") or "FLAIR volume",
                        progress=lambda done, total: emit("progress", done=int(done), total=int(total)),
                        notify=lambda message: emit("note", message=str(message)))
    for name in RESULT_ARRAYS:
        array = getattr(result, name)
        np.save(folder / f"out_{name}.npy", array.astype(np.uint8) if name == "lesion_mask" else array)
    emit("done", notes=notes + list(result.notes), mask_source=result.mask_source, segmentor=result.segmentor)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run(Path(argv[0]))
    except Exception as exc:  # reported to the panel, which shows it
        traceback.print_exc(file=sys.stdout)
        emit("error", type=type(exc).__name__, message=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
