"""``pyroflows.zoo.model_files``: a user's model file loads without running pickled code unless trusted, and a
trusted pickle says so with :class:`TrustedPickleWarning` on every load."""

import warnings

import pytest
import torch
from torch import nn

from pyroflows.errors import CheckpointError, PyroflowsWarning
from pyroflows.zoo.model_files import TrustedPickleWarning, load_model_file


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()


def test_a_pickle_needs_trust_and_warns_on_every_load(tmp_path):
    model = _model()
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="needs --trust-model-file"):
        load_model_file(tmp_path / "model.pt")
    for _ in range(2):  # said every time, not once per session
        with pytest.warns(TrustedPickleWarning, match="loading a whole-model pickle runs code from the file"):
            loaded = load_model_file(tmp_path / "model.pt", trust=True)
    assert issubclass(TrustedPickleWarning, PyroflowsWarning)
    x = torch.randn(3, 1, 2, 2)
    assert torch.equal(loaded(x), model(x)) and not loaded.training


def test_an_exported_program_loads_without_trust_or_warning(tmp_path):
    model = _model()
    x = torch.randn(3, 1, 2, 2)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "model.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model_file(tmp_path / "model.pt2")
    assert torch.equal(loaded(x), model(x))
    with pytest.raises(CheckpointError, match="no such model file"):
        load_model_file(tmp_path / "missing.pt2")
