"""``pyroflows.diffusion.demo``: the diffusion part of the tour writes its outputs and replaces nothing unasked."""

import pytest

from pyroflows.errors import DataError


def test_demo_fast(tmp_path):
    from pyroflows.diffusion.demo import DEMO_OUTPUTS, run_demo

    lines = run_demo(tmp_path, fast=True)
    assert any("energy distance / noise floor" in line for line in lines)
    assert (tmp_path / "ddpm_moons.pt").exists() and (tmp_path / "ddpm_moons.png").exists()
    assert all((tmp_path / name).exists() for name in DEMO_OUTPUTS)  # every declared output is written
    with pytest.raises(DataError, match="already exists"):  # the library never replaces a file unasked
        run_demo(tmp_path, fast=True)
