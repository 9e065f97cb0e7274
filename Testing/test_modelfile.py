import json
import pickle
import zipfile

import pytest
import torch

from smilecore.modelfile import FORMAT_VERSION, ModelFileError, load_model, model_config, save_model
from smilecore.networks import build_networks

SIZES = {n: {"base": 4, "depth": 2} for n in "GSR"}


def test_round_trip_carries_weights_and_configuration(tmp_path):
    nets = build_networks(SIZES)
    path = save_model(tmp_path / "m.pt", nets, model_config(SIZES, "t2", {"note": "x"}))
    model = load_model(path)
    assert model.modality == "t2" and model.config["networks"] == SIZES
    assert model.config["orientation"]["canonical"] == "LPS"
    for n in "GSR":
        for k, v in nets[n].state_dict().items():
            assert torch.equal(v, model.nets[n].state_dict()[k])
    half = load_model(save_model(tmp_path / "h.pt", nets, model_config(SIZES, "t2"), half=True))
    w = nets["G"].state_dict()["unet.head.weight"]
    assert torch.allclose(half.nets["G"].state_dict()["unet.head.weight"], w, atol=1e-3)
    assert (tmp_path / "h.pt").stat().st_size < (tmp_path / "m.pt").stat().st_size


def test_other_formats_and_newer_versions_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="other.pt: not a SMILE model file"):
        load_model(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="text.pt"):
        load_model(tmp_path / "text.pt")
    blob = {"format": "smile-model", "format_version": FORMAT_VERSION + 1, "config": json.dumps({})}
    torch.save(blob, tmp_path / "newer.pt")
    with pytest.raises(ModelFileError, match="newer"):
        load_model(tmp_path / "newer.pt")


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED_BY_MODEL_FILE",))


def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "smile-model", "format_version": 1, "config": "{}", "G": _Payload()}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(ModelFileError, match="refused without running them"):
        load_model(path)
    assert not (tmp_path / "PWNED_BY_MODEL_FILE").exists()
    # the same bytes through plain pickle would have run the payload: the test is meaningful
    pickle.loads(pickle.dumps(_Payload()))
    assert (tmp_path / "PWNED_BY_MODEL_FILE").exists()
