"""A refactor must not change results: today's engine against the references that
make_references.py wrote before it (the demo's outputs on a slab of the bundled case, and the
weights after a few seeded steps of every phase)."""
import subprocess
import sys

import numpy as np

from make_references import HERE, demo_slab


def _same(reference: str, now: dict):
    ref = np.load(HERE / "references" / reference)
    assert sorted(ref.files) == sorted(now)
    for key in ref.files:
        # equal to the last bit on this kind of machine; 1e-6 leaves room for another CPU's
        # kernels summing in another order, and nothing more
        np.testing.assert_allclose(now[key], ref[key], rtol=0, atol=1e-6 * max(1.0, float(np.abs(ref[key]).max())),
                                   err_msg=f"{reference}: {key}")


def test_the_demo_outputs_are_unchanged_on_a_slab():
    _same("demo_slab.npz", demo_slab())


def test_seeded_training_steps_give_the_same_weights(tmp_path):
    """In a process of its own: make_references.py pins oneDNN's AVX2 kernels before torch loads, so
    that an AVX-512 machine sums as the AVX2 machine that wrote the references did."""
    out = tmp_path / "weights.npz"
    subprocess.run([sys.executable, str(HERE / "make_references.py"), "--weights", str(out)], check=True)
    _same("trained_weights.npz", dict(np.load(out)))
