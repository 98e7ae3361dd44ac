"""``pyroflows.evaluation.demo``: the evaluation part of the tour reports each method and replaces nothing unasked."""

import pytest

from pyroflows.errors import DataError


def test_fast_demo_reports_each_method(tmp_path):
    from pyroflows.evaluation.demo import DEMO_OUTPUTS, run_demo

    lines = run_demo(tmp_path, fast=True)
    assert lines[0].startswith("3 digits") and len(lines) == 4
    assert all((tmp_path / name).exists() for name in DEMO_OUTPUTS)
    with pytest.raises(DataError, match="already exists"):
        run_demo(tmp_path, fast=True)
