"""Coverage (issue 23, item 4): what S marks, the pseudo-normal removes. A gated G is held open over
S's lesion mask and COVER_RIM px around it at synthesis, whatever its gate learned."""
import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from conftest import SIZES
from smilecore.gated import COVER_RIM, GatedGenerator, soft_fill
from smilecore.modelfile import load_model, model_config, resources_dir, save_model
from smilecore.networks import build_networks
from smilecore.synthesis import synthesize
from smilecore.synthetic import make_case


def _slices(n=3, size=40, seed=1):
    image, _, label = make_case(np.random.default_rng(seed), (size, size, n), n_lesions=1)
    I = torch.from_numpy(np.moveaxis(image / image.max(), 2, 0).astype(np.float32))[:, None]
    M = torch.from_numpy(np.moveaxis(label > 0, 2, 0))[:, None]
    return I, M


def _shut(G: GatedGenerator) -> GatedGenerator:
    """The gate as shut as training could leave it: every gate logit far below the floor."""
    with torch.no_grad():
        G.unet.head.bias[0] = -30.0
    return G.eval()


def test_the_gate_is_held_open_over_the_cover_and_its_rim_and_nowhere_else():
    torch.manual_seed(0)
    G = _shut(GatedGenerator(base=4, depth=2, norm="batch"))
    I, M = _slices()
    assert M.any()
    _, A0, _ = G.parts(I)
    assert not A0.any()                                           # shut: G alone changes nothing
    _, A, C = G.parts(I, cover=M)
    rim = torch.from_numpy(ndimage.binary_dilation(M[:, 0].numpy(), structure=np.ones((1, 3, 3)),
                                                   iterations=COVER_RIM))[:, None]
    assert torch.equal(A > 0, rim) and torch.all(A[rim] == 1)     # the mask and its rim, exactly
    out = G(I, cover=M)
    assert torch.equal(out[~rim], I[~rim])                        # outside: the input, to the bit
    assert torch.allclose(out[rim], soft_fill(I, 1 - A)[rim])     # inside: the fill, not the input


class _BrightIsLesion(torch.nn.Module):
    """A stand-in segmentor that calls every voxel above 0.75 (normalised) lesion: on a T2 slice
    through the bundled case's tumour that is mostly the tumour. It keeps the real S's U-Net (the
    synthesis reads its size multiple from it) but does not use it."""

    def __init__(self, real_S):
        super().__init__()
        self.unet = real_S.unet

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 40 * (x - 0.75)], dim=1)


def test_synthesis_removes_what_s_marks_even_where_the_gate_is_shut(tmp_path):
    sizes = {n: dict(v) for n, v in SIZES.items()}
    sizes["G"]["kind"] = "gated"
    torch.manual_seed(0)
    model = load_model(save_model(tmp_path / "m.pt", build_networks(sizes), model_config(sizes, "t2")))
    _shut(model.nets["G"])
    model.nets["S"] = _BrightIsLesion(model.nets["S"])
    image = nib.load(resources_dir() / "sample" / "Brats18_TCIA02_370_1_t2.nii.gz")
    data = np.asarray(image.dataobj)[:, :, 70:73].astype(np.float32)
    r = synthesize(data, image.affine, model, notify=lambda m: None)
    marked = r.lesion_mask > 0
    assert marked.sum() > 500
    # the marked (bright) tissue is gone: replaced by a fill of what surrounds it, much darker
    assert r.pseudo_normal[marked].mean() < 0.8 * data[marked].mean()
    # far from the mark (its rim and the fade of R's change) nothing changed
    near = ndimage.binary_dilation(marked, structure=np.ones((3, 3, 1)), iterations=COVER_RIM + 2)
    np.testing.assert_array_equal(r.pseudo_normal[~near], data[~near])
