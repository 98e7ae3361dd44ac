"""``pyroflows.demo.run_demo``: the tour runs the chosen parts in order and checks every output before any work."""

import pytest

from pyroflows.demo import DEMO_PARTS, run_demo
from pyroflows.errors import DataError


def test_one_part_writes_its_own_folder_and_reports_each_line(tmp_path):
    from pyroflows.flows.demo import DEMO_OUTPUTS

    reported = []
    lines = run_demo(tmp_path / "tour", fast=True, parts=("flow",), report=reported.append)
    assert sorted(p.name for p in (tmp_path / "tour").iterdir()) == ["flow"]
    assert all((tmp_path / "tour" / "flow" / name).exists() for name in DEMO_OUTPUTS)
    assert reported[0] == "== flow ==" and [f"  {line}" for line in lines] == reported[1:-1]
    assert reported[-1].startswith("  (") and reported[-1].endswith(" s)")


def test_unknown_parts_and_earlier_outputs_are_refused_before_any_work(tmp_path):
    with pytest.raises(DataError, match=r"parts: unknown \['flows'\]; expected some of flow, diffusion"):
        run_demo(tmp_path / "tour", fast=True, parts=("flow", "flows"))
    assert not (tmp_path / "tour").exists()
    # An earlier result of the last part stops the tour before its first part writes anything.
    last = list(DEMO_PARTS)[-1]
    (tmp_path / "tour" / last).mkdir(parents=True)
    (tmp_path / "tour" / last / "table.md").write_text("an earlier table")
    with pytest.raises(DataError, match="already exists"):
        run_demo(tmp_path / "tour", fast=True)
    assert sorted(p.name for p in (tmp_path / "tour").iterdir()) == [last]
    assert (tmp_path / "tour" / last / "table.md").read_text() == "an earlier table"
