"""The fill that starts from the other hemisphere's texture (lesionfill.mirror_fill, FillNet's
"mirror" start; issue 24), on small synthetic slices."""
import numpy as np
import torch

from smilecore.dataset import CachedCase, _boxes
from smilecore.fillnet import FillNet, HoleSamples, fill_volume, mirror_total, net_input, other_side, tumour_shapes
from smilecore.flair import mirror_sum, mirrored
from smilecore.lesionfill import mirror_fill, smooth_fill

N = 48
TOTAL = 45            # the brain's left-right centre at 22.5, off the array's centre (23.5)


def _symmetric_slice() -> torch.Tensor:
    """A brain-like slice, mirror-symmetric about x = TOTAL / 2: a disc with stripes (gyri)."""
    x, y = np.meshgrid(np.arange(N, dtype=np.float32), np.arange(N, dtype=np.float32), indexing="ij")
    dx, dy = x - TOTAL / 2, y - N / 2
    brain = dx ** 2 + dy ** 2 < 20 ** 2
    image = 0.5 + 0.2 * np.sin(np.abs(dx) / 1.5) + 0.1 * np.cos(dy / 2.0)
    return torch.from_numpy(np.where(brain, image, 0).astype(np.float32))[None, None]


def _hole() -> torch.Tensor:
    hole = torch.zeros(1, 1, N, N)
    hole[..., 8:18, 16:30] = 1        # on one side only: its mirror (rows 27-37) is not voided
    return hole


def _gradient(x: torch.Tensor, inside: torch.Tensor) -> float:
    gx, gy = np.gradient(x[0, 0].numpy(), axis=(0, 1))
    return float(np.hypot(gx, gy)[inside[0, 0].numpy() > 0].mean())


def test_a_symmetric_brain_is_filled_with_its_own_texture():
    truth, hole = _symmetric_slice(), _hole()
    voided = truth * (1 - hole)
    other = torch.from_numpy(mirrored(voided.numpy(), TOTAL))
    filled = mirror_fill(voided, hole, other, alpha=1.0)
    assert torch.equal(filled[hole == 0], voided[hole == 0])           # the input outside the hole
    inner = torch.zeros_like(hole)
    inner[..., 9:17, 17:29] = 1
    assert _gradient(filled, inner) > 0.9 * _gradient(truth, inner)     # textured, as the truth
    assert _gradient(smooth_fill(voided, hole), inner) < 0.5 * _gradient(truth, inner)   # the old start is not
    # near the truth for a symmetric brain (not exact: the mirror lacks its own copy of the hole,
    # so its smooth fill draws on slightly other tissue than this side's)
    err = lambda f: float((f - truth).abs()[hole > 0].mean())  # noqa: E731
    assert err(filled) < 0.3 * err(smooth_fill(voided, hole))
    half = mirror_fill(voided, hole, other, alpha=0.5)
    assert torch.allclose(half, 0.5 * (filled + smooth_fill(voided, hole)), atol=1e-5)


def test_where_the_mirror_is_tumour_or_hole_the_fill_is_the_smooth_fill():
    truth, hole = _symmetric_slice(), _hole()
    voided = truth * (1 - hole)
    tumour = np.zeros((N, N), bool)
    tumour[27:33, 16:30] = True                 # mirrors to rows 13-18: 13-17 of the hole
    other = torch.from_numpy(other_side(voided[0, 0].numpy(), tumour, TOTAL))[None, None]
    filled, smooth = mirror_fill(voided, hole, other), smooth_fill(voided, hole)
    fallback = torch.zeros_like(hole, dtype=torch.bool)
    fallback[..., 13:18, 16:30] = True
    assert torch.equal(filled[fallback], smooth[fallback])
    assert not torch.allclose(filled[(hole > 0) & ~fallback], smooth[(hole > 0) & ~fallback])
    # a hole across the midline: its mirror is the hole itself (voided), nothing to copy there
    across = torch.zeros_like(hole)
    across[..., 18:28, 20:26] = 1
    v = truth * (1 - across)
    assert torch.equal(mirror_fill(v, across, torch.from_numpy(mirrored(v.numpy(), TOTAL))), smooth_fill(v, across))


def test_fillnet_starts_at_the_mirror_fill_and_fill_volume_keeps_tumour_out_of_the_mirror():
    torch.manual_seed(0)
    net = FillNet(base=4, depth=2, start="mirror").eval()
    truth = _symmetric_slice()[0, 0].numpy()
    volume = np.repeat(truth[:, :, None], 3, axis=2)
    mask = np.zeros(volume.shape, bool)
    mask[8:18, 16:30, 1] = True
    tumour = np.zeros(volume.shape, bool)
    tumour[27:33, 16:30, :] = True
    given = np.where(mask, 0, volume)
    filled = fill_volume(net, given, mask, tumour)
    assert np.array_equal(filled[~mask], given[~mask])
    total = mirror_sum(volume > 0)
    v, h = (torch.from_numpy(a[:, :, 1].astype(np.float32))[None, None] for a in (given, mask))
    other = torch.from_numpy(other_side(given[:, :, 1], tumour[:, :, 1], total))[None, None]
    assert torch.allclose(torch.from_numpy(filled[:, :, 1])[None, None], mirror_fill(v, h, other).clamp(min=0), atol=1e-5)
    assert torch.allclose(net(net_input(v, h, other, v, v)), mirror_fill(v, h, other), atol=1e-6)


def test_training_sees_the_hemisphere_mirror_with_the_tumour_zeroed():
    img = _symmetric_slice()[0, 0].numpy()
    tumour = np.zeros((N, N), np.uint8)
    tumour[28:34, 20:28] = 1
    slices = np.stack([img] * 3).astype(np.float16)
    case = CachedCase("sym", slices, np.stack([tumour] * 3), np.arange(3), _boxes(slices > 0), _boxes(np.stack([tumour] * 3) > 0), 1.0)
    assert mirror_total(case) == mirror_sum(np.moveaxis(slices, 0, 2) > 0)
    samples = HoleSamples([case], tumour_shapes([case], min_area=10))
    samples.index = [(0, 1)]
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, truth = samples.sample(N, rng)      # the whole slice: the crop is the slice
        expected = other_side(x[0].numpy(), tumour > 0, mirror_total(case))
        assert np.array_equal(x[2].numpy(), expected)
