"""``pyroflows.flows.demo``: the flow part of the tour writes its outputs and replaces nothing unasked."""

import pytest

from pyroflows.errors import DataError


def test_run_demo_fast_writes_its_outputs(tmp_path):
    from pyroflows.flows.demo import DEMO_OUTPUTS, run_demo

    lines = run_demo(tmp_path / "flow", fast=True)
    assert any("KL estimate" in line for line in lines)
    for name in ("data.npy", "flow.pt", "samples.npy", "density.png"):
        assert (tmp_path / "flow" / name).exists()
    assert DEMO_OUTPUTS == ("data.npy", "flow.pt", "samples.npy", "density.png")
    with pytest.raises(DataError, match="already exists"):  # a second run replaces nothing without overwrite
        run_demo(tmp_path / "flow", fast=True)
