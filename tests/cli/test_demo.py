"""``pyroflows demo --fast``: every part of the tour runs and writes its outputs; a second run replaces nothing."""

import importlib

from pyroflows.cli import main
from pyroflows.demo import DEMO_PARTS


def test_demo_fast_runs_every_part_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "tour"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if line.startswith("== ")] == [f"== {p} ==" for p in DEMO_PARTS]
    assert printed.rstrip().endswith(f"outputs written to {out.resolve()}")
    for part, module in DEMO_PARTS.items():
        outputs = importlib.import_module(module).DEMO_OUTPUTS
        assert all((out / part / name).stat().st_size > 0 for name in outputs), part
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["demo", "--fast", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyroflows: error: ") and "already exists" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
