"""``pyroflows flow fit/score/sample --context`` and one-sided bounds on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyroflows.cli import main
from pyroflows.flows import CompactFlow, ConditionalCompactFlow


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(120, 2))
    y = rng.beta(np.exp(x[:, 0]) + 0.5, 2.0)
    paths = {}
    for name, array in {
        "x": x,
        "y": y,
        "x_short": x[:100],
        "x_three": np.zeros((120, 3)),
        "x_nan": np.where(np.arange(120)[:, None] == 7, np.nan, x),
        "positive": rng.gamma(0.5, 1.0, size=120),
    }.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    paths["x_csv"] = tmp_path / "x.csv"
    np.savetxt(paths["x_csv"], x, delimiter=",")
    return paths


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyroflows: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture
def model(files, tmp_path):
    out = tmp_path / "cond.pt"
    argv = ["flow", "fit", str(files["y"]), "--context", str(files["x"]), "--low", "0", "--high", "1"]
    assert main([*argv, "--out", str(out), "--steps", "10", "--quiet", "--layers", "1"]) == 0
    return out


def test_fit_score_and_sample_with_a_context(files, model, tmp_path, capsys):
    flow = ConditionalCompactFlow.load(model)
    assert flow.context_dim == 2 and bool(flow.context_scaling_set)
    capsys.readouterr()
    assert main(["flow", "score", str(model), str(files["y"]), "--context", str(files["x_csv"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    import torch

    with torch.no_grad():
        expected = -flow.condition(torch.as_tensor(np.load(files["x"]))).log_prob(
            torch.as_tensor(np.load(files["y"]))[:, None]
        )
    assert out["n"] == 120 and out["nll"] == pytest.approx(expected.mean().item(), rel=1e-12)
    draws = tmp_path / "draws.npy"
    assert main(["flow", "sample", str(model), "--context", str(files["x"]), "-n", "5", "--out", str(draws)]) == 0
    samples = np.load(draws)
    assert samples.shape == (120, 5) and ((samples > 0) & (samples < 1)).all()
    draws_csv = tmp_path / "draws.csv"
    assert main(["flow", "sample", str(model), "--context", str(files["x"]), "-n", "3", "--out", str(draws_csv)]) == 0
    assert np.loadtxt(draws_csv, delimiter=",").shape == (360,)


@pytest.mark.parametrize(
    "command, message",
    [
        ("fit-short", "x_short.npy: has 100 row(s) but the data have 120"),
        ("fit-nan", "x_nan.npy: 1 row(s) hold NaN or inf, e.g. rows [7]"),
        ("score-short", "x_short.npy: has 100 row(s) but the data have 120"),
        ("score-three", "x_three.npy: expected shape (N, 2)"),
        ("score-nan", "x_nan.npy: 1 row(s) hold NaN or inf"),
        ("score-missing", "is a conditional flow; pass --context FEATURES"),
        ("sample-three", "x_three.npy: expected shape (N, 2)"),
        ("sample-missing", "is a conditional flow; pass --context FEATURES"),
    ],
)
def test_context_errors_are_one_line(command, message, files, model, tmp_path, capsys):
    kind, case = command.split("-")
    context = {"short": "x_short", "nan": "x_nan", "three": "x_three"}.get(case)
    extra = ["--context", str(files[context])] if context else []
    out = tmp_path / "out.npy"
    if kind == "fit":
        argv = ["flow", "fit", str(files["y"]), *extra, "--low", "0", "--high", "1", "--out", str(tmp_path / "m.pt")]
    elif kind == "score":
        argv = ["flow", "score", str(model), str(files["y"]), *extra]
    else:
        argv = ["flow", "sample", str(model), *extra, "-n", "2", "--out", str(out)]
    capsys.readouterr()
    assert message in _error(argv, capsys)
    assert not (tmp_path / "m.pt").exists() and not out.exists()


def test_a_context_for_an_unconditional_model_is_an_error(files, tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    assert main(["flow", "fit", str(files["y"]), "--low", "0", "--high", "1", "--out", str(plain), "--steps", "5",
                 "--quiet"]) == 0  # fmt: skip
    assert "is not a conditional flow" in _error(
        ["flow", "score", str(plain), str(files["y"]), "--context", str(files["x"])], capsys
    )


def test_one_sided_bounds_on_the_command_line(files, tmp_path, capsys):
    out = tmp_path / "positive.pt"
    argv = ["flow", "fit", str(files["positive"]), "--low", "0", "--high", "inf", "--out", str(out)]
    assert main([*argv, "--steps", "10", "--quiet"]) == 0
    flow = CompactFlow.load(out)
    assert flow.high.item() == float("inf") and flow().support.check(flow.sample((50,))).all()
    upper = tmp_path / "upper.pt"
    negative = tmp_path / "negative.npy"
    np.save(negative, -np.load(files["positive"]))
    assert main(["flow", "fit", str(negative), "--low=-inf", "--high", "0", "--out", str(upper), "--steps", "5",
                 "--quiet"]) == 0  # fmt: skip
    assert "no finite bound" in _error(
        ["flow", "fit", str(files["y"]), "--low=-inf", "--high", "inf", "--out", str(tmp_path / "x.pt")], capsys
    )
    assert "--low: bounds must be finite" in _error(
        ["flow", "fit", str(files["y"]), "--low", "nan", "--high", "1", "--out", str(tmp_path / "x.pt")], capsys
    )


def test_fit_without_steps_runs_the_flow_classs_default_budget(files, tmp_path, capsys, monkeypatch):
    """``flow fit`` reads ``default_fit_steps`` from the flow class it builds: the conditional one with --context."""
    monkeypatch.setattr(CompactFlow, "default_fit_steps", 12)
    monkeypatch.setattr(ConditionalCompactFlow, "default_fit_steps", 15)
    common = ["--low", "0", "--high", "1", "--quiet", "--json", "--layers", "1"]
    for name, extra, steps in (("plain", [], 12), ("cond", ["--context", str(files["x"])], 15)):
        out = tmp_path / f"{name}.pt"
        assert main(["flow", "fit", str(files["y"]), *extra, *common, "--out", str(out)]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert (summary["steps"], summary["conditional"]) == (steps, bool(extra))
