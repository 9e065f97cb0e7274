"""Peak memory (and time) of a whole `smile synthesize` process on a large volume.

A 512 x 512 x 300 float32 NIfTI is made from the bundled sample case (written under /tmp, never
into the repository), either "padded" (the 1 mm case in the middle of a zero volume: the
networks see what they see on the sample) or "resampled" (the case resampled to 0.47 x 0.47 x
0.52 mm voxels: synthesis resamples each slice to the model's 1 mm and back). `smile synthesize`
then runs in a child process; its peak resident memory and CPU time come from the operating
system's account of the child (getrusage), its wall time from the clock.

    python scripts/bench_memory.py [--kind padded|resampled|sample] [--precision fp32] [--keep]

"sample" runs the bundled case itself (a BraTS volume, 240 x 240 x 155). Prints one line per
run: kind, shape, peak RSS, user + sys CPU seconds, wall seconds (docs/performance.md).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (512, 512, 300)


def sample_path() -> Path:
    from smilecore.modelfile import resources_dir
    return next((resources_dir() / "sample").glob("*_t2.nii.gz"))


def make_volume(kind: str, folder: Path) -> Path:
    """The large test volume of `kind` in `folder` (float32, gzip NIfTI)."""
    import nibabel as nib
    import torch
    img = nib.load(str(sample_path()))
    data = np.asarray(img.dataobj, np.float32)
    affine = img.affine.copy()
    if kind == "padded":
        out = np.zeros(SHAPE, np.float32)
        at = [(n - m) // 2 for n, m in zip(SHAPE, data.shape)]
        out[at[0]:at[0] + data.shape[0], at[1]:at[1] + data.shape[1], at[2]:at[2] + data.shape[2]] = data
        affine[:3, 3] -= affine[:3, :3] @ np.array(at, float)   # the case stays where it was in the world
    else:
        t = torch.from_numpy(data)[None, None]
        out = torch.nn.functional.interpolate(t, size=SHAPE, mode="trilinear", align_corners=False)[0, 0].numpy()
        out = np.clip(out, 0, None)   # trilinear keeps the zero background exactly zero; no negatives
        affine[:3, :3] = affine[:3, :3] * (np.array(data.shape, float) / np.array(SHAPE, float))
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    path = folder / f"large_{kind}_t2.nii.gz"
    nib.save(nib.Nifti1Image(out, affine, header), str(path))
    return path


def run(path: Path, out_dir: Path, precision: str) -> dict:
    """`smile synthesize` on `path` in a child process: peak RSS (MB), CPU and wall seconds."""
    cmd = [sys.executable, "-m", "smilecore.cli", "synthesize", str(path), "--out-dir", str(out_dir),
           "--precision", precision]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"smile synthesize failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)   # this script's only child
    scale = 1 if sys.platform == "darwin" else 1024          # ru_maxrss: bytes on macOS, KiB on Linux
    return {"peak_rss_mb": usage.ru_maxrss * scale / 2 ** 20, "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["padded", "resampled", "sample"], default="padded")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (volume and outputs)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="smile-bench-memory-"))
    try:
        path = sample_path() if args.kind == "sample" else make_volume(args.kind, folder)
        r = run(path, folder / "out", args.precision)
        shape = "240 x 240 x 155" if args.kind == "sample" else " x ".join(map(str, SHAPE))
        print(f"{args.kind} {shape}: peak RSS {r['peak_rss_mb']:.0f} MB, CPU {r['cpu_s']:.1f} s (user + sys), "
              f"wall {r['wall_s']:.1f} s, {os.cpu_count()} CPUs, precision {args.precision}")
    finally:
        if not args.keep:
            import shutil
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"kept {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
