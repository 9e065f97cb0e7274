"""Known truth across cases: lesions of other cases pasted into a host's healthy slices, and the
model on nearly healthy brains (the tumour replaced by the mirrored healthy side)."""
import numpy as np
import pytest
import torch

from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.evaluate import (HEALTHY_GROW, HEALTHY_MIN_REPLACED, healthy_brain, mirror_axis, mirrored_healthy,
                                transplant_set)
from smilecore.lesionfill import grow


@pytest.fixture(scope="module")
def cases(cohort, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return [cache_case(c, cache) for c in find_cases(cohort) if c.labeled]


def test_cross_case_transplants_take_other_cases_lesions_into_the_host(cases):
    host, donors = cases[0], cases
    t = transplant_set([host], n=8, seed=0, min_lesion=10, donors=donors, pairing="other")
    assert len(t.image) == 8
    assert len({d for _, _, d, _ in t.source}) > 1             # lesions of several donors
    for img, truth, lesion, (h, hz, d, dz) in zip(t.image, t.truth, t.lesion, t.source):
        assert h == host.case_id and d != host.case_id
        k = int(np.nonzero(host.z == hz)[0][0])
        assert not host.abnormal[k]                              # the truth is a healthy host slice
        assert np.array_equal(truth, np.asarray(host.image[k], np.float32))
        assert (truth[lesion] > 0).all() and lesion.any()        # pasted inside the host's brain
        donor = next(c for c in cases if c.case_id == d)
        j = int(np.nonzero(donor.z == dz)[0][0])
        assert np.array_equal(img[lesion], np.asarray(donor.image[j], np.float32)[lesion])
        assert np.array_equal(img[~lesion], truth[~lesion])
    same = transplant_set([host], n=4, seed=0, min_lesion=10, donors=donors, pairing="same")
    assert all(d == host.case_id for _, _, d, _ in same.source)
    with pytest.raises(ValueError):
        transplant_set([host], n=4, donors=donors, pairing="mirror")


def test_mirrored_healthy_brain_replaces_the_tumour_by_the_other_side(cases):
    built = 0
    for case in cases:
        mb = mirrored_healthy(case)
        images, mask = np.asarray(case.image, np.float32), np.asarray(case.mask) > 0
        k = mirror_axis(images > 0)
        for img, measured, replaced, s in zip(mb.image, mb.measured, mb.replaced, mb.slices):
            built += 1
            xs, ys = np.nonzero(replaced)
            assert ((k - xs >= 0) & (k - xs < images.shape[1])).all()
            np.testing.assert_array_equal(img[xs, ys], images[s][k - xs, ys])    # the mirrored tissue
            assert not mask[s][k - xs, ys].any() and (images[s][k - xs, ys] > 0).all()  # healthy brain there
            lesion = mask[s] & (images[s] > 0)
            assert not (lesion & measured & ~replaced).any()                   # no lesion voxel counted
            grown = grow(torch.from_numpy(mask[s])[None, None], HEALTHY_GROW)[0, 0].numpy() > 0
            assert replaced[grown & (images[s] > 0)].mean() >= HEALTHY_MIN_REPLACED  # nearly all of it replaced
            assert np.array_equal(img[~replaced], images[s][~replaced])
        assert 0 < mb.replaced_voxels <= mb.lesion_voxels
    assert built > 0


class _Identity(torch.nn.Module):
    def __init__(self, add=0.0):
        super().__init__()
        self.add = add

    def forward(self, x):
        return x + self.add


class _NeverLesion(torch.nn.Module):
    def forward(self, x):
        return torch.cat([torch.ones_like(x), -torch.ones_like(x)], 1)


class _AlwaysLesion(torch.nn.Module):
    def forward(self, x):
        return torch.cat([-torch.ones_like(x), torch.ones_like(x)], 1)


def test_healthy_brain_report_of_an_identity_and_a_shifting_model(cases):
    ident = healthy_brain(_Identity(), _NeverLesion(), cases)
    pooled = ident["pooled"]
    assert pooled["slices"] > 0 and set(ident["per_case"]) == {c.case_id for c in cases}
    assert pooled["lesion_share_mean"] == pooled["lesion_share_worst"] == 0
    assert pooled["changed_share"] == pooled["mean_abs_change"] == 0
    shifted = healthy_brain(_Identity(0.05), _AlwaysLesion(), cases)["pooled"]
    assert shifted["changed_share"] == 1 and shifted["lesion_share_worst"] == 1
    assert shifted["mean_abs_change"] == pytest.approx(0.05, abs=1e-6)
    for entry in ident["per_case"].values():
        assert 0 < entry["lesion_replaced"] <= 1 and entry["slices"] <= entry["abnormal_slices"]


def test_change_away_from_the_lesion_is_zero_for_the_identity_and_one_for_a_shift(cases):
    from smilecore.evaluate import evaluate
    from smilecore.modelfile import SmileModel
    for add, expected in ((0.0, 0.0), (0.05, 1.0)):
        model = SmileModel(nets={"G": _Identity(add), "S": _NeverLesion()}, config={})
        report = evaluate(model, cases, _NeverLesion(), None)
        away = report["outside_lesion_changed"]
        assert away["pooled"] == expected and set(away["per_case"].values()) == {expected}
        assert away["grow"] == 4 and away["limit"] == 0.01


def test_the_healthy_brain_is_scaled_again_as_synthesis_would_scale_it(cases):
    from smilecore.volume import Normalisation
    case = cases[0]
    plain = mirrored_healthy(case)
    again = mirrored_healthy(case, normalisation="clip-percentile")
    full = mirrored_healthy(case, min_replaced=0.0)
    assert plain.rescaled_by == 1.0 and np.array_equal(again.slices, plain.slices)
    # the factor is the reciprocal of the healthy brain's own 99.5th percentile (in cached units)
    images = np.asarray(case.image, np.float32)
    healthy = images.copy()
    healthy[full.slices] = full.image
    measured = images > 0
    measured[full.slices] = full.measured
    assert again.rescaled_by == pytest.approx(1 / Normalisation.fit(healthy, measured).scale, rel=1e-5)
    assert np.allclose(again.image, np.clip(plain.image * again.rescaled_by, 0, 1))
    report = healthy_brain(_Identity(), _NeverLesion(), [case], normalisation="median")
    assert report["per_case"][case.case_id]["rescaled_by"] != 1.0
