"""The readout bottleneck: training changes the mask, save/load is exact, dead units give no NaN."""

import pyro
import pytest
import torch
from torch import nn

from pyroflows.attribution import ReadoutBottleneck
from pyroflows.errors import CheckpointError, DataError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
    )


def _data(n=64, batch=16):
    torch.manual_seed(1)
    x = torch.randn(n, 1, 8, 8)
    return [(x[i : i + batch], torch.randint(0, 3, (batch,))) for i in range(0, n, batch)]


def test_readout_trains_and_attributes_in_one_pass():
    model = _model()
    readout = ReadoutBottleneck(model, "1", ["1", "3", "5"]).estimate(_data())
    before = readout.attribute(_data()[0][0])
    history = readout.fit(_data(), epochs=3, lr=1e-2)
    after = readout.attribute(_data()[0][0])
    assert len(history) == 12 and history[-1] < history[0]
    assert not torch.allclose(before, after)
    assert after.shape == (16, 8, 8) and (after >= 0).all()
    assert len(pyro.get_param_store()) == 0


def test_readout_save_load_is_exact(tmp_path):
    model = _model()
    readout = ReadoutBottleneck(model, "1", ["1", "3"], beta=5.0, hidden=16).estimate(_data())
    readout.fit(_data(), epochs=1, lr=1e-2)
    path = readout.save(tmp_path / "readout.pt")
    loaded = ReadoutBottleneck.load(path, model)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(readout.attribute(x), loaded.attribute(x))
    assert loaded.beta == 5.0 and loaded.hidden == 16 and loaded.readout_layers == ["1", "3"]
    with pytest.raises(DataError, match="already exists"):
        readout.save(path)
    with pytest.raises(CheckpointError, match="does not fit"):
        ReadoutBottleneck.load(path, nn.Sequential(nn.Linear(2, 2)))


def test_dead_units_in_readout_features_give_no_nan():
    model = _model()
    with torch.no_grad():
        model[2].bias.fill_(-100.0)  # layer "3" (ReLU after the second conv) never fires
    readout = ReadoutBottleneck(model, "1", ["1", "3"]).estimate(_data())
    readout.fit(_data(), epochs=1, lr=1e-2)
    maps = readout.attribute(torch.randn(4, 1, 8, 8))
    assert torch.isfinite(maps).all()
    assert all(torch.isfinite(p).all() for p in readout.network.parameters())


def test_readout_errors():
    model = _model()
    readout = ReadoutBottleneck(model, "1", ["3"])
    with pytest.raises(RuntimeError, match="estimate"):
        readout.attribute(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        ReadoutBottleneck(model, "1", ["nope"])


def test_readout_is_checkpointable_save_returns_the_path_and_load_takes_the_model_by_keyword(tmp_path):
    from pathlib import Path

    from pyroflows.serialization import Checkpointable, load_checkpoint

    model = _model()
    readout = ReadoutBottleneck(model, "1", ["1", "3"], hidden=8).estimate(_data())
    assert isinstance(readout, Checkpointable)
    path = readout.save(tmp_path / "readout.pt")
    assert isinstance(path, Path) and path == tmp_path / "readout.pt"
    checkpoint = load_checkpoint(path, kind="ReadoutBottleneck")
    assert checkpoint["config"] == readout.config and checkpoint["extra"]["n_samples"] == 64
    loaded = ReadoutBottleneck.load(path, model=model, graph_split=False)
    assert loaded.split.mode == "rerun" and loaded.n_samples == 64
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(readout.attribute(x), loaded.attribute(x))
    with pytest.raises(TypeError, match="needs the model"):
        ReadoutBottleneck.load(path)
    with pytest.raises(RuntimeError, match="nothing to save"):
        ReadoutBottleneck(model, "1").save(tmp_path / "untrained.pt")


def test_fit_labels_are_checked_as_class_indices():
    model = _model()
    readout = ReadoutBottleneck(model, "1", ["1"], hidden=8).estimate(_data())
    x = _data()[0][0]
    with pytest.raises(DataError, match="fit\\(\\) labels: expected class indices"):
        readout.fit([(x, torch.full((16,), 0.5))])
    with pytest.raises(DataError, match=r"fit\(\) labels: expected an int or 16 class indices"):
        readout.fit([(x, torch.zeros(15, dtype=torch.long))])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_readout_network_takes_the_models_dtype_and_reloads_exactly(tmp_path, dtype):
    # The tests' default dtype is float64: a float32 model checks that nothing is built in the default dtype.
    model = _model().to(dtype)
    data = [(x.to(dtype), y) for x, y in _data(32)]
    readout = ReadoutBottleneck(model, "1", ["1", "3"]).estimate(data)
    readout.fit(data, epochs=1, lr=1e-2)
    maps = readout.attribute(data[0][0])
    assert maps.dtype == dtype and torch.isfinite(maps).all()
    assert {p.dtype for p in readout.network.parameters()} == {dtype}
    assert {t.dtype for t in readout.readout_mean + readout.readout_std} == {dtype}
    again = ReadoutBottleneck.load(readout.save(tmp_path / "readout.pt"), model=model)
    assert torch.equal(again.attribute(data[0][0]), maps)  # the weights were not rounded through another dtype
