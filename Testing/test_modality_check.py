"""Modality from the image (issue 23 item 5, smilecore/modalitycheck.py): a T1 or T1ce given to a
T2 model is refused because its CSF is dark, whatever the file is named. (Every shared BraTS case's
four modalities are measured in test_clinical_inputs, which reads them once for both checks, and
the bundled T2 there too.)"""
import nibabel as nib
import numpy as np
import pytest

from conftest import SHARED_DATA
from smilecore.modalitycheck import T2_MIN, ImageModalityError, csf_brightness
from smilecore.modelfile import load_model, resources_dir
from smilecore.synthesis import synthesize_file
from smilecore.synthetic import LPS
from smilecore.volume import CanonicalVolume

BRATS = SHARED_DATA / "brats"


def _brain(csf: float, shape=(100, 120, 80), seed=0):
    """An ellipsoidal brain (1 mm): white matter 0.5, a grey rim 0.6, two ventricles at `csf`,
    noise of SD 0.03."""
    x, y, z = np.meshgrid(*[np.linspace(-1.25, 1.25, s) for s in shape], indexing="ij")  # air around it
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    image = np.where(r < 1, np.where(r > 0.85, 0.6, 0.5), 0.0)
    ventricles = ((np.abs(x) - 0.15) / 0.08) ** 2 + (y / 0.4) ** 2 + (z / 0.3) ** 2 < 1
    image = np.where(ventricles, csf, image)
    image += 0.03 * np.random.default_rng(seed).standard_normal(shape) * (r < 1)
    return (1000 * image).astype(np.float32)


def test_bright_csf_reads_as_t2_and_dark_csf_does_not_under_any_scaling():
    t2, t1 = CanonicalVolume.from_array(_brain(csf=1.0), LPS), CanonicalVolume.from_array(_brain(csf=0.15), LPS)
    bright, dark = (csf_brightness(v.raw, v.brain, v.spacing) for v in (t2, t1))
    assert bright > T2_MIN > 1 > dark
    for scale, offset in ((0.01, 0.0), (3.0, 500.0)):                   # scaled, and an intercept
        moved = csf_brightness(t2.raw * scale + offset, t2.brain, t2.spacing)
        assert moved == pytest.approx(bright, rel=1e-3)
    zscored = np.where(t2.brain, (t2.raw - t2.raw[t2.brain].mean()) / t2.raw[t2.brain].std(), 0).astype(np.float32)
    z = CanonicalVolume.from_array(zscored, LPS)                       # negative values in the brain
    assert csf_brightness(z.raw, z.brain, z.spacing) == pytest.approx(bright, rel=1e-3)
    # 5 mm slices: the same anatomy, averaged in fives along the slice axis
    thick = _brain(csf=1.0).reshape(100, 120, 16, 5).mean(axis=3)
    v = CanonicalVolume.from_array(thick, np.diag([-1.0, -1.0, 5.0, 1.0]))
    assert csf_brightness(v.raw, v.brain, v.spacing) > T2_MIN


def test_a_voided_lesion_is_not_read_as_dark_csf():
    """The inpainting challenge's format (zeros inside the lesion mask, the mask part of the brain):
    the void is no tissue, so the T2 still reads as T2 (it read as T1 before: 1.03 on the bundled
    case voided with another case's tumour shape)."""
    image = _brain(csf=1.0)
    void = np.zeros(image.shape, bool)
    void[25:50, 20:45, 25:55] = True                                   # 19 mL, mostly in the deep brain
    reference = CanonicalVolume.from_array(image, LPS)
    brain = reference.brain.copy()
    image[void] = 0
    vol = CanonicalVolume.from_array(image, LPS, brain=brain)
    assert csf_brightness(vol.raw, vol.brain, vol.spacing) > T2_MIN


def test_too_little_deep_brain_gives_no_verdict():
    """A small test volume (the procedural cohort's size) has no deep brain: not checked."""
    small = _brain(csf=0.15, shape=(40, 40, 16))
    vol = CanonicalVolume.from_array(small, LPS)
    assert csf_brightness(vol.raw, vol.brain, vol.spacing) is None


@pytest.mark.skipif(not BRATS.is_dir(), reason="needs ../shared/data/brats (not in a user's clone)")
def test_a_t1_named_like_a_t2_is_refused_saying_what_the_image_looks_like(tmp_path):
    """End to end, on the shared T1 nearest to the bar (1.19 against T2_MIN 1.7)."""
    case = BRATS / "Brats18_2013_11_1"
    img = nib.load(case / f"{case.name}_t1.nii.gz")
    path = tmp_path / f"{case.name}_t2.nii.gz"                          # a T2's name: the name check passes
    nib.save(img, path)
    with pytest.raises(ImageModalityError) as refusal:
        synthesize_file(path, tmp_path / "out", load_model(resources_dir() / "smile-default-t2.pt"))
    message = str(refusal.value)
    assert "\n" not in message and str(path) in message
    assert "does not look like a T2 image: its CSF (the ventricles, deep in the brain) is dark" in message
    assert not list(tmp_path.glob("out/*.nii.gz"))
