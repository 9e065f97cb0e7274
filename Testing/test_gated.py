"""The gated generator (smilecore/gated.py): G(I) = (1 - A) I + A C."""
import json

import numpy as np
import pytest
import torch

from conftest import tiny_config
from smilecore.cases import find_cases
from smilecore.dataset import cache_case
from smilecore.gated import GATE_FLOOR, GatedGenerator, soft_fill
from smilecore.lesionfill import smooth_fill
from smilecore.modelfile import load_model, model_config, save_model
from smilecore.networks import build_networks
from smilecore.synthetic import make_case
from smilecore.train import MODEL_NAME, Trainer


def _slices(n=4, size=32, seed=0):
    image, _, label = make_case(np.random.default_rng(seed), (size, size, n), n_lesions=1)
    I = torch.from_numpy(np.moveaxis(image / image.max(), 2, 0).astype(np.float32))[:, None]
    M = torch.from_numpy(np.moveaxis(label > 0, 2, 0))[:, None]
    return I, M


def test_where_the_gate_is_zero_g_returns_the_input_exactly():
    torch.manual_seed(0)
    G = GatedGenerator(base=4, depth=2, norm="batch")
    I, M = _slices()
    for mode in (G.train, G.eval):
        mode()
        assert torch.equal(G(I), I)                          # untrained: every A below the floor
    C = torch.rand_like(I)
    out = G.compose(I, M.float(), C)                         # known answer with a binary gate
    assert torch.equal(out[~M], I[~M]) and torch.equal(out[M], C[M])


def test_c_starts_as_the_smooth_fill():
    I, M = _slices()
    # with a binary gate the weighted fill is lesionfill's smooth fill of that mask
    assert torch.allclose(soft_fill(I, 1 - M.float())[M], smooth_fill(I, M)[M], atol=1e-6)
    G = GatedGenerator(base=4, depth=2, norm="batch").eval()
    _, A, C = G.parts(I)
    assert torch.equal(C, soft_fill(I, 1 - A))                # the learned residual starts at zero


def test_the_gate_gets_gradients_below_its_floor():
    G = GatedGenerator(base=4, depth=2)
    I, M = _slices()
    logits, A, C = G.parts(I)
    assert not A.any()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, M.float()).backward()
    assert G.unet.head.bias.grad[0] != 0


def test_model_files_carry_the_generator_kind(tmp_path):
    sizes = {n: {"base": 4, "depth": 2, "norm": "batch"} for n in "GSR"}
    sizes["G"]["kind"] = "gated"
    path = save_model(tmp_path / "m.pt", build_networks(sizes), model_config(sizes, "t2"))
    assert isinstance(load_model(path).nets["G"], GatedGenerator)


def _mean_gate(G, cases):
    """Mean A inside and outside the expert lesion over the abnormal slices of `cases`."""
    inside, outside = [], []
    with torch.no_grad():
        for case in cases:
            ab = case.abnormal
            I = torch.from_numpy(np.asarray(case.image[ab], np.float32))[:, None]
            M = torch.from_numpy(np.asarray(case.mask[ab]) > 0)[:, None]
            A = torch.sigmoid(G.parts(I)[0])
            inside.append(A[M].mean())
            outside.append(A[~M & (I > 0)].mean())
    return float(torch.stack(inside).mean()), float(torch.stack(outside).mean())


def test_a_tiny_training_moves_the_gate_onto_the_lesion(cohort, tmp_path):
    cfg = tiny_config(cohort, tmp_path / "run", generator="gated", variant="gvs", labeled_fraction=1.0,
                      epochs=(12,), transplant_weight=1.0)  # 120 steps: gate 0.48 inside, 0.027 outside
    Trainer(cfg).run()
    G = load_model(tmp_path / "run" / MODEL_NAME).nets["G"]
    cases = [cache_case(c, tmp_path / "cache") for c in find_cases(cohort) if c.labeled]
    before = _mean_gate(GatedGenerator(base=8, depth=3, norm="batch").eval(), cases)
    inside, outside = _mean_gate(G, cases)
    assert max(before) < GATE_FLOOR                       # shut everywhere before training
    assert inside > 0.3 and inside > 5 * outside, (inside, outside)
    # and in synthesis: healthy tissue away from the lesion is left exactly as it was, nearly everywhere
    import nibabel as nib
    from scipy import ndimage
    from smilecore.synthesis import synthesize
    case = cohort / "Synth_000"
    img = nib.load(case / "Synth_000_t2.nii.gz")
    data = img.get_fdata().astype(np.float32)
    lesion = ndimage.binary_dilation(nib.load(case / "Synth_000_seg.nii.gz").get_fdata() > 0, iterations=4)
    result = synthesize(data, img.affine, load_model(tmp_path / "run" / MODEL_NAME), notify=lambda m: None)
    healthy = (data > 0) & ~lesion
    changed = np.abs(result.pseudo_normal - data)[healthy] > 0.01 * np.percentile(data[data > 0], 99.5)
    assert changed.mean() < 0.05, changed.mean()


def test_a_gated_g_warm_started_from_a_segmentor_gates_where_it_sees_lesion():
    torch.manual_seed(0)
    S = build_networks({n: {"base": 4, "depth": 2, "norm": "batch"} for n in "GSR"})["S"].eval()
    torch.nn.init.normal_(S.unet.head.weight, std=20.0)       # a segmentor with confident answers
    torch.nn.init.zeros_(S.unet.head.bias)
    G = GatedGenerator.from_segmentor(S, floor=0.1).eval()
    I, _ = _slices()
    with torch.no_grad():
        p = torch.softmax(S(I), 1)[:, 1:]
        _, A, C = G.parts(I)
    assert (p >= 0.1).any() and (p < 0.1).any()
    assert torch.allclose(A, torch.where(p >= 0.1, p, torch.zeros_like(p)), atol=1e-5)
    assert torch.equal(C, soft_fill(I, 1 - A))
    grown = GatedGenerator.from_segmentor(S, floor=0.1, grow=2).eval()
    with torch.no_grad():
        assert torch.allclose(grown.parts(I)[1], torch.nn.functional.max_pool2d(A, 5, 1, 2), atol=1e-5)


def test_training_g_against_a_frozen_segmentor_from_a_model_file(cohort, tmp_path):
    first = tiny_config(cohort, tmp_path / "first", variant="gvs", labeled_fraction=1.0, epochs=(2,),
                        normalisation="median")
    start = Trainer(first).run()
    with pytest.raises(ValueError, match="init_from"):
        tiny_config(cohort, tmp_path / "x", freeze="S").check()
    with pytest.raises(ValueError, match="trains nothing"):
        tiny_config(cohort, tmp_path / "x", init_from=str(start), freeze="SR").check()
    cfg = tiny_config(cohort, tmp_path / "g", variant="gvs", labeled_fraction=1.0, epochs=(2,), generator="gated",
                      init_from=str(start), freeze="S", gate_grow=1, gate_floor=0.1, transplant_weight=1.0,
                      gate_dice_weight=1.0)
    model = load_model(Trainer(cfg).run())
    events = [json.loads(line) for line in (tmp_path / "g" / "events.jsonl").read_text().splitlines()]
    dice_terms = [e["losses"]["transplant_gate_dice"] for e in events
                  if e["event"] == "step" and "transplant_gate_dice" in e["losses"]]
    assert dice_terms and all(0 <= d <= 1 for d in dice_terms)
    assert model.config["training"]["gate_dice_weight"] == 1.0
    before = load_model(start)
    for name in "SR":   # kept exactly as the file had them (S frozen; R not trained by phase 1)
        for k, v in before.nets[name].state_dict().items():
            assert torch.equal(v, model.nets[name].state_dict()[k]), (name, k)
    G = model.nets["G"]
    assert isinstance(G, GatedGenerator) and (G.grow, G.floor) == (1, 0.1)
    warm = GatedGenerator.from_segmentor(before.nets["S"], grow=1, floor=0.1).state_dict()
    assert any(not torch.equal(v, warm[k]) for k, v in G.state_dict().items() if v.is_floating_point())
    assert model.config["training"]["init_from"]["file"] == start.name and model.config["training"]["frozen"] == "S"
    assert before.normalisation == model.normalisation == "median"   # the start's scaling, unless told otherwise


def test_the_gate_dice_term_counts_a_missed_small_lesion_as_much_as_a_large_one():
    from smilecore.losses import L_gate, L_gate_dice
    region = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    region[0, 0, 8:56, 8:56] = True    # 2304 voxels
    region[1, 0, 30:34, 30:34] = True  # 16 voxels
    brain = torch.ones_like(region)
    sure = torch.where(region, 20.0, -20.0)
    assert L_gate_dice(sure, region) < 0.01
    missed_small = sure.clone()
    missed_small[1] = -20.0              # the gate shut on the small lesion only
    # half of the slices' lesions missed: about 0.5 of the Dice term, a tiny share of the BCE over the brain
    assert L_gate_dice(missed_small, region) == pytest.approx(0.5, abs=0.03)
    assert L_gate(missed_small, region, brain) < 0.1
    with pytest.raises(ValueError, match="Dice term"):
        from smilecore.train import TrainConfig
        TrainConfig(data_dir=".", out_dir=".", generator="gated", gate_dice_weight=1.0).check()
