"""``pyroflows.attribution.demo``: the attribution part of the tour writes its outputs and replaces nothing unasked."""

import pytest

from pyroflows.errors import DataError


def test_fast_attribution_demo_writes_its_outputs_and_refuses_to_overwrite(tmp_path):
    from pyroflows.attribution.demo import DEMO_OUTPUTS, run_demo

    lines = run_demo(tmp_path, fast=True)
    assert lines[0].startswith("bounding-box score on 4 held-out cluttered digits: per-sample ")
    assert all((tmp_path / name).stat().st_size > 0 for name in DEMO_OUTPUTS)
    with pytest.raises(DataError, match="already exists"):
        run_demo(tmp_path, fast=True)
    assert run_demo(tmp_path, fast=True, overwrite=True)[-1] == f"maps and figure in {tmp_path}"
