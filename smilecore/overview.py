"""PNG overview of a synthesis: input | pseudo-normal | lesion | pseudo-abnormal on the axial
slice with the most lesion, shown in radiological convention (anterior up, patient's left on
the image's right), all panels with the input's grey scale (0 to its V99.5)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .files import temporary_beside
from .volume import reorient, to_canonical


def _display(slice_lp: np.ndarray) -> np.ndarray:
    # canonical slice is indexed (L, P): transposed, rows run anterior -> posterior and
    # columns patient right -> left, which is the radiological view.
    return slice_lp.T


def grey(a: np.ndarray, hi: float) -> np.ndarray:
    return (np.clip(a / max(hi, 1e-9), 0, 1) * 255).astype(np.uint8)


def panel_row(panels: list[tuple[str, np.ndarray]], zoom: int = 2) -> Image.Image:
    """Side-by-side RGB panels (H x W x 3 uint8), enlarged `zoom` times, with a caption above each."""
    h, w = (s * zoom for s in panels[0][1].shape[:2])
    caption = 16
    canvas = Image.new("RGB", (w * len(panels), h + caption), "black")
    draw = ImageDraw.Draw(canvas)
    for k, (title, rgb) in enumerate(panels):
        canvas.paste(Image.fromarray(rgb).resize((w, h), Image.Resampling.NEAREST), (k * w, caption))
        draw.text((k * w + 4, 2), title, fill="white")
    return canvas


def save_png(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    with temporary_beside(path) as tmp:   # a failed write (full disk) leaves no temporary file
        image.save(tmp)
        os.replace(tmp, path)
    return path


def overview_image(data, affine, result, z: int | None = None) -> Image.Image:
    t = to_canonical(affine)
    image, pn, pab = (reorient(np.asarray(a, np.float32), t) for a in (data, result.pseudo_normal,
                                                                       result.pseudo_abnormal))
    mask = reorient(np.asarray(result.lesion_mask) > 0, t)
    if z is None:
        per_slice = mask.sum(axis=(0, 1))
        z = int(per_slice.argmax()) if per_slice.max() > 0 else int((image > 0).sum(axis=(0, 1)).argmax())
    hi = float(np.percentile(image[image > 0], 99.5)) if (image > 0).any() else 1.0
    # crop every panel to the brain of this slice (with a margin), so the anatomy fills it
    xs, ys = np.nonzero((image[:, :, z] > 0).any(1))[0], np.nonzero((image[:, :, z] > 0).any(0))[0]
    if len(xs):
        box = (slice(max(xs[0] - 8, 0), xs[-1] + 9), slice(max(ys[0] - 8, 0), ys[-1] + 9), z)
    else:
        box = (slice(None), slice(None), z)
    g = [_display(grey(a[box], hi)) for a in (image, pn, pab)]
    m = _display(mask[box])
    overlay = np.stack([g[0]] * 3, axis=-1)
    overlay[m] = (0.5 * overlay[m] + 0.5 * np.array([255, 40, 40])).astype(np.uint8)
    rgb = lambda a: np.stack([a] * 3, axis=-1)
    return panel_row([("input", rgb(g[0])), ("pseudo-normal", rgb(g[1])),
                      ("lesion", overlay), ("pseudo-abnormal", rgb(g[2]))])


def save_overview(data, affine, result, path: str | Path, z: int | None = None) -> Path:
    return save_png(overview_image(data, affine, result, z), path)


def grid_figure(path: Path, columns: list[np.ndarray], titles: list[str], row_labels: list[str]) -> Path:
    """Rows of panels (one per column, slices in [0, 1]) with a label above each row, all cropped
    to the union of the rows' brain boxes; written as PNG."""
    brain = (columns[0] > 0).any(0)
    xs, ys = np.nonzero(brain.any(1))[0], np.nonzero(brain.any(0))[0]
    box = (slice(max(xs[0] - 4, 0), xs[-1] + 5), slice(max(ys[0] - 4, 0), ys[-1] + 5)) if len(xs) else np.s_[:, :]
    rows = []
    for r in range(len(columns[0])):
        panels = [(titles[c] if r == 0 else "", np.stack([grey(col[r][box].T, 1.0)] * 3, -1))
                  for c, col in enumerate(columns)]
        rows.append(panel_row(panels))
    label_h = 14
    canvas = Image.new("RGB", (rows[0].width, sum(r.height + label_h for r in rows)), "black")
    draw, y = ImageDraw.Draw(canvas), 0
    for row, label in zip(rows, row_labels):
        draw.text((4, y + 1), label, fill=(200, 200, 120))
        canvas.paste(row, (0, y + label_h))
        y += row.height + label_h
    return save_png(canvas, path)
