"""Writes Testing/references/*.npz: what the engine gave before a behaviour-preserving refactor.

test_refactor_invariance.py compares today's engine against them. Rerun this only when a change
is *meant* to alter results (and say so in the commit):

    .venv/bin/python Testing/make_references.py
"""
import os
import sys
import tempfile
from pathlib import Path

# oneDNN (torch's CPU convolutions) picks its kernels by the CPU's widest vector unit: on AVX-512 the
# sums run in another order than on AVX2, and a few seeded training steps drift by 3e-5. Weights are
# written, and checked (test_refactor_invariance runs this file), with AVX2 kernels on every machine.
# Only when run as a script: imported by a test, it must not reach the processes later tests start
# (with AVX2 kernels, bf16 synthesis on an AVX512-BF16 CPU is 12 times slower).
if __name__ == "__main__":
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SLAB = slice(70, 74)  # four axial slices of the bundled case through its tumour


def demo_slab() -> dict:
    """The default model's outputs on a slab of the bundled sample case (the demo's input)."""
    from smilecore.modelfile import default_model_path, load_model, resources_dir
    from smilecore.synthesis import synthesize
    from smilecore.volume import load_nifti
    data, affine, _ = load_nifti(resources_dir() / "sample" / "Brats18_TCIA02_370_1_t2.nii.gz")
    torch.set_num_threads(1)
    r = synthesize(data[:, :, SLAB], affine, load_model(default_model_path()),
                   notify=lambda m: None, precision="fp32")   # "auto" is bf16 on CPUs with native bf16
    return {k: np.asarray(getattr(r, k)) for k in
            ("pseudo_normal", "lesion_probability", "lesion_mask", "pseudo_abnormal")}


def trained_weights() -> dict:
    """The weights after a few steps of every phase of a tiny seeded run (gated G with the
    transplant terms, so that every loss term is exercised), on a procedural cohort."""
    from conftest import tiny_config
    from smilecore.synthetic import write_cohort
    from smilecore.train import Trainer
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cohort = write_cohort(Path(tmp) / "cohort", n_cases=5, seed=3, shape=(32, 32, 8), unlabeled=1)
        for generator in ("unet", "gated"):
            cfg = tiny_config(cohort, Path(tmp) / generator, epochs=1, steps_per_epoch=2, base=4, depth=2,
                              generator=generator, transplant_weight=1.0, transplant_lesion_weight=1.0)
            trainer = Trainer(cfg)
            trainer.run()
            for name, net in trainer.nets.items():
                for key, t in net.state_dict().items():
                    out[f"{generator}/{name}/{key}"] = t.detach().cpu().numpy()
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--weights"]:   # the seeded weights alone, to this file (test_refactor_invariance)
        np.savez_compressed(sys.argv[2], **trained_weights())
        sys.exit(0)
    np.savez_compressed(HERE / "references" / "demo_slab.npz", **demo_slab())
    np.savez_compressed(HERE / "references" / "trained_weights.npz", **trained_weights())
    print("written", *sorted(p.name for p in (HERE / "references").iterdir()))
