"""The Slicer catalog's screenshot: the real SMILE Synthesis panel after a real run on the bundled sample
case, beside the overview of that run's result (input | pseudo-normal | lesion | pseudo-abnormal).

The panel is the module's own widget code and .ui file on real Qt widgets (PyQt5, offscreen) and real
MRML (the slicer-core wheel), driven as a user drives it: sample case loaded, device chosen, Apply, the
background synthesis followed until done. Slicer's application is not installable here, so the CTK and
qMRML widgets (node selectors, path fields, collapsible sections) are the stand-ins of
Testing/slicer_widget_standins.py; the caption says so.

    .venv/bin/python scripts/catalog_screenshot.py [--out docs/screenshots/SMILESynthesis-panel.png]

Needs the test extras (PyQt5, slicer-core) and ../shared/slicer-python, as the widget tests do.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(ROOT / "Testing"))

CAPTION = ("SMILE Synthesis after Apply on the bundled sample case (BraTS 2018, TCIA02_370), rendered with "
           "Qt offscreen outside Slicer: the panel is the module's own code, the CTK/qMRML widgets are "
           "stand-ins (Testing/slicer_widget_standins.py). Right: that run's result on the slice with the most lesion.")


def run_panel(device: str, timeout: float):
    """The synthesis panel after Apply on the sample case: (widget, parameter node, input volume, seconds
    from Apply to done)."""
    import slicer_standins as standins
    standins.assemble()
    import slicer
    module_file, _ = standins.load_module("SMILESynthesis")
    widget, _parent = standins.make_widget(module_file, "SMILESynthesis")
    from SMILESynthesisLib import bundled_sample_paths
    from SMILESynthesisLib.batch import read_volume
    volume = read_volume(slicer.mrmlScene, bundled_sample_paths()[0], "SMILE sample T2")
    ui, params = widget.ui, widget._parameterNode
    assert params.inputVolume is volume, "the input selector did not take the loaded case"
    params.device = device
    started = time.monotonic()
    ui.applyButton.click()
    deadline = started + timeout
    while ui.applyButton.text != "Apply" and time.monotonic() < deadline:
        standins.QtWidgets.QApplication.processEvents()
        time.sleep(0.05)
    status = ui.statusLabel.text
    if not status.startswith("Done.") or standins.slot_errors:
        raise SystemExit(f"the synthesis did not finish: {status!r} {standins.slot_errors}")
    return widget, params, volume, time.monotonic() - started


def overview(params, volume):
    """The engine's overview figure (smilecore.overview) of the panel's output nodes."""
    from SMILESynthesisLib import nodes

    import slicer
    from smilecore.overview import overview_image
    data, affine = nodes.array_from_volume(volume)
    result = types.SimpleNamespace(
        pseudo_normal=nodes.array_from_volume(params.pseudoNormalVolume)[0],
        pseudo_abnormal=nodes.array_from_volume(params.pseudoAbnormalVolume)[0],
        lesion_mask=nodes.segmentation_to_mask(slicer.mrmlScene, params.lesionSegmentation, volume))
    return overview_image(data, affine, result)


def compose(panel_png: bytes, figure, out: Path) -> Path:
    """Panel on the left; the overview's four tiles as a 2 x 2 grid on the right; the caption below."""
    import io

    from PIL import Image, ImageDraw, ImageFont
    panel = Image.open(io.BytesIO(panel_png)).convert("RGB")
    tile_w = figure.width // 4
    tiles = [figure.crop((k * tile_w, 0, (k + 1) * tile_w, figure.height)) for k in range(4)]
    grid = Image.new("RGB", (2 * tile_w, 2 * figure.height), "black")
    for k, tile in enumerate(tiles):
        grid.paste(tile, ((k % 2) * tile_w, (k // 2) * figure.height))
    scale = min(1.0, panel.height / grid.height) if grid.height > panel.height else 1.0
    grid = grid.resize((int(grid.width * scale), int(grid.height * scale)), Image.Resampling.LANCZOS)
    width, font = panel.width + grid.width, ImageFont.load_default(size=15)  # Pillow's own font
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines, line = [], ""
    for word in CAPTION.split():  # wrapped by hand to the figure's width
        if line and measure.textlength(line + " " + word, font=font) > width - 16:
            lines.append(line)
            line = word
        else:
            line = (line + " " + word).strip()
    lines.append(line)
    top = max(panel.height, grid.height)
    canvas = Image.new("RGB", (width, top + 12 + 20 * len(lines)), "white")
    canvas.paste(panel, (0, 0))
    canvas.paste(grid, (panel.width, 0))
    ImageDraw.Draw(canvas).multiline_text((8, top + 6), "\n".join(lines), fill="black", font=font, spacing=4)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "SMILESynthesis-panel.png")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the synthesis")
    args = parser.parse_args(argv)
    widget, params, volume, seconds = run_panel(args.device, args.timeout)
    window = widget.ui.applyButton.window()
    from PyQt5 import QtCore, QtWidgets
    window.resize(520, QtWidgets.QWidget.sizeHint(window).height())  # a method: PythonQt's rules read properties
    buffer = QtCore.QBuffer()
    buffer.open(QtCore.QIODevice.WriteOnly)
    window.grab().save(buffer, "PNG")
    out = compose(bytes(buffer.data()), overview(params, volume), args.out)
    widget.cleanup()
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB; Apply to Done in {seconds:.0f} s on device {args.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
