import pytest
import torch

from smilecore import losses as L
from smilecore.unet import Generator, Reconstructor, Segmentor, UNet


def test_any_slice_size_works():
    for h, w in [(37, 53), (16, 16), (240, 240)]:
        x = torch.rand(2, 1, h, w)
        assert UNet(1, 2, base=4, depth=3)(x).shape == (2, 2, h, w)
    g, s, r = Generator(4, 2), Segmentor(4, 2), Reconstructor(4, 2)
    x = torch.rand(1, 1, 21, 30)
    assert g(x).shape == x.shape and s(x).shape == (1, 2, 21, 30)
    assert r(x, torch.ones_like(x)).shape == x.shape


def test_generator_loss_ignores_the_lesion_and_asks_for_no_lesion():
    I = torch.rand(2, 1, 8, 8)
    M = torch.zeros(2, 8, 8, dtype=torch.long)
    M[:, 2:5, 2:5] = 1
    G_I = I.clone()
    G_I[:, :, 2:5, 2:5] = 0                        # changes only inside the lesion
    confident_normal = torch.zeros(2, 2, 8, 8)
    confident_normal[:, 0] = 20
    terms = L.generator_terms(I, M, G_I, confident_normal)
    assert terms["gen_identity"] == 0 and terms["gen_adv"] < 1e-6
    terms = L.generator_terms(I, torch.zeros_like(M), G_I, confident_normal)
    assert terms["gen_identity"] > 0                # on a normal slice every change counts


def test_confidence_enhancer_thresholds_at_eps():
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 1, 0] = torch.tensor([0.0, 2.0, 5.0])   # p = 0.5, 0.88, 0.99
    PL, loss = L.confidence_enhancer(logits, eps=0.9)
    assert PL.tolist() == [[[0, 0, 1]]] and loss > 0
    PL, _ = L.confidence_enhancer(logits, eps=0.8, brain=torch.tensor([[[True, True, False]]]))
    assert PL.tolist() == [[[0, 1, 0]]]


def test_transplant_pairs_paste_lesions_into_normal_brain_only():
    I = torch.rand(3, 1, 6, 6) + 0.1
    I[1, :, :, :2] = 0                              # background strip in the normal slice
    M = torch.zeros(3, 6, 6, dtype=torch.long)
    M[0, 1:4, 0:4] = 1
    labeled = torch.tensor([True, True, False])
    I_t, truth, where = L.transplant_pairs(I, M, labeled)
    assert torch.equal(truth, I[1:2])
    pasted = (M[0] > 0) & (I[1, 0] > 0)
    assert torch.equal(where[0, 0], pasted)
    assert torch.equal(I_t[0, 0][pasted], I[0, 0][pasted])
    assert torch.equal(I_t[0, 0][~pasted], I[1, 0][~pasted])
    assert L.transplant_pairs(I, torch.zeros_like(M), labeled) is None


def test_mse_inside_a_region_counts_only_its_pixels():
    x, y = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    y[..., 0, 0], y[..., 3, 3] = 2.0, 5.0
    region = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    region[..., 0, :2] = True                      # two pixels, one of them wrong by 2
    assert float(L.L_mse_inside(x, y, region)) == 2.0
    assert float(L.L_mse_inside(x, y, torch.zeros_like(region))) == 0.0


def test_bilinear_upsampling_keeps_shapes_and_the_identity_start():
    from smilecore.unet import Generator, Segmentor, UNet
    x = torch.rand(2, 1, 37, 45)
    g = Generator(base=4, depth=3, norm="batch", upsample="bilinear").eval()
    assert torch.equal(g(x), x)                                 # residual, zero head: starts as identity
    assert Segmentor(base=4, depth=3, upsample="bilinear")(x).shape == (2, 2, 37, 45)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    with pytest.raises(ValueError, match="up-sampling"):
        UNet(1, 1, upsample="nearest")


def test_model_files_without_the_upsampling_key_load_as_transpose():
    from smilecore.modelfile import default_model_path, load_model
    model = load_model(default_model_path())
    assert "upsample" not in model.config["networks"]["G"]      # written before the option existed
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.nets["G"].modules())
