"""The shipped default model's FLAIR segmentor (S_flair, issue 23) on the bundled sample case, which
neither S nor S_flair saw in training: `smile demo --with-flair` finds the sample's FLAIR, and on 12
axial slices through the tumour the T2 with the bundled FLAIR gives S_flair's lesion mask, at least
as close to the expert's as S's from the T2 alone."""
import nibabel as nib
import numpy as np
import pytest

from smilecore.cli import demo_inputs
from smilecore.cli import main as cli_main
from smilecore.metrics import dice
from smilecore.modelfile import default_model_path, load_model
from smilecore.networks import FLAIR_NET

SLAB = slice(66, 78)


def test_the_demo_takes_the_bundled_flair_only_when_asked():
    image, none = demo_inputs(with_flair=False)
    assert image.name == "Brats18_TCIA02_370_1_t2.nii.gz" and none is None
    _, flair = demo_inputs(with_flair=True)
    assert flair.name == "Brats18_TCIA02_370_1_flair.nii.gz"
    assert FLAIR_NET in load_model(default_model_path()).nets


def _slab(path, folder):
    image = nib.load(path)
    folder.mkdir(exist_ok=True)
    nib.save(image.slicer[:, :, SLAB], folder / path.name)
    return folder / path.name


@pytest.mark.slow
def test_s_flair_on_the_sample_slab_finds_the_lesion_better_than_the_t2_alone(tmp_path, capsys):
    image, flair = demo_inputs(with_flair=True)
    t2, flair = _slab(image, tmp_path / "in"), _slab(flair, tmp_path / "in")
    truth = np.asarray(nib.load(image.with_name(image.name.replace("_t2.", "_seg."))).dataobj)[:, :, SLAB] > 0
    found = {}
    for name, extra in (("t2", []), ("flair", ["--flair", str(flair)])):
        out = tmp_path / name
        assert cli_main(["synthesize", str(t2), "--out-dir", str(out), *extra]) == 0
        found[name] = dice(nib.load(out / "Brats18_TCIA02_370_1_t2_lesion_mask.nii.gz").get_fdata() > 0, truth)
        if name == "flair":
            assert f"the lesion mask is {FLAIR_NET}'s" in capsys.readouterr().err
    assert found["flair"] >= 0.85, found           # issue 23's bar for S_flair, here on one held-out case
    assert found["flair"] >= found["t2"] - 0.02, found
