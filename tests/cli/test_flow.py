"""``pyroflows flow fit | score | sample`` end to end, and every bad input ending in one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyroflows.cli import main
from pyroflows.flows import CompactFlow


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npy"
    np.save(path, rng.uniform(1.0, 2.5, 400))
    return path


@pytest.fixture
def model(tmp_path, data):
    path = tmp_path / "flow.pt"
    assert main(["flow", "fit", str(data), "--low", "1", "--high", "2.5", "--out", str(path), "--layers", "2",
                 "--steps", "20", "--quiet"]) == 0  # fmt: skip
    return path


def test_fit_score_sample_round_trip(model, data, tmp_path, capsys):
    capsys.readouterr()
    assert main(["flow", "score", str(model), str(data), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["n"] == 400
    flow = CompactFlow.load(model)
    with torch.no_grad():
        expected = -flow().log_prob(torch.as_tensor(np.load(data))[:, None]).mean().item()
    assert payload["nll"] == pytest.approx(expected, abs=1e-12)

    out = tmp_path / "samples.csv"
    assert main(["flow", "sample", str(model), "-n", "50", "--out", str(out)]) == 0
    samples = np.loadtxt(out, delimiter=",")
    assert samples.shape == (50,) and ((samples >= 1.0) & (samples <= 2.5)).all()
    assert main(["flow", "sample", str(model), "-n", "50", "--out", str(out)]) == 2  # no silent replacement
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["flow", "sample", str(model), "-n", "50", "--out", str(out), "--force"]) == 0


def test_fit_a_box_from_csv(tmp_path, capsys):
    rng = np.random.default_rng(1)
    path = tmp_path / "box.csv"
    np.savetxt(path, np.column_stack([rng.uniform(0, 1, 200), rng.uniform(-2, 3, 200)]), delimiter=",")
    out = tmp_path / "box.pt"
    argv = ["flow", "fit", str(path), "--low", "0,-2", "--high", "1,3", "--out", str(out), "--steps", "5"]
    assert main([*argv, "--layers", "1", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["transform"] == "autoregressive" and summary["dim"] == 2
    assert CompactFlow.load(out).dim == 2


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyroflows: error: ") and "Traceback" not in err
    return err


def test_fit_rejects_data_outside_the_bounds_naming_rows(tmp_path, capsys):
    path = tmp_path / "d.npy"
    values = np.random.default_rng(0).uniform(1.0, 2.5, 100)
    values[[3, 7, 50]] = [0.5, 3.0, 1000.0]
    np.save(path, values)
    err = _error(["flow", "fit", str(path), "--low", "1", "--high", "2.5", "--out", str(tmp_path / "m.pt")], capsys)
    assert "3 of 100 row(s) lie outside [1.0, 2.5], e.g. rows [3, 7, 50] = [0.5, 3.0, 1000.0]" in err
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("nan", [], "hold NaN or inf"),
        ("shape3", [], "expected shape (N,) or (N, D)"),
        ("ok", ["--low", "2", "--high", "1"], "--low must be below --high"),
        ("ok", ["--low", "0,0", "--high", "3,3"], "--low: got 2 values but the data have 1 column(s)"),
        ("ok", ["--low", "a", "--high", "3"], "--low: expected a number"),
        ("missing", [], "no such file"),
        ("corrupt", [], "not a readable .npy file"),
        ("ok", ["--steps", "0"], "argument --steps: expected an integer >= 1"),
        ("ok", ["--transform", "autoregressive"], "'autoregressive' needs dim > 1 (data with 2 or more columns)"),
        ("ok", ["--transform", "radial", "--ends", "secant"], "ends: 'secant' needs transform='spline'"),
        ("ok", ["--ends", "both"], "argument --ends: invalid choice: 'both'"),
    ],
)
def test_fit_bad_input(tmp_path, capsys, content, extra, message):
    path = tmp_path / "d.npy"
    if content == "nan":
        np.save(path, np.array([1.5, np.nan, 2.0] * 5))
    elif content == "shape3":
        np.save(path, np.ones((4, 2, 2)))
    elif content == "corrupt":
        path.write_bytes(b"\x93NUMPY garbage")
    elif content == "ok":
        np.save(path, np.full(20, 1.5))
    bounds = [] if any(a in extra for a in ("--low",)) else ["--low", "0", "--high", "3"]
    argv = ["flow", "fit", str(path), *bounds, "--out", str(tmp_path / "m.pt"), *extra]
    assert message in _error(argv, capsys)


def test_score_refuses_points_outside_the_support(model, tmp_path, capsys):
    path = tmp_path / "outside.npy"
    np.save(path, np.array([1.5, 2.0, 7.0]))
    err = _error(["flow", "score", str(model), str(path), "--json"], capsys)
    assert "1 of 3 row(s) lie outside [1.0, 2.5], e.g. rows [2] = [7.0]" in err


def test_score_and_sample_bad_files(model, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert "not a readable pyroflows model" in _error(["flow", "score", str(tmp_path / "junk.pt"), "x.npy"], capsys)
    assert "no such model file" in _error(
        ["flow", "sample", str(tmp_path / "no.pt"), "-n", "3", "--out", "s.npy"], capsys
    )
    err = _error(["flow", "sample", str(model), "-n", "0", "--out", str(tmp_path / "s.npy")], capsys)
    assert "argument -n: expected an integer >= 1" in err
    np.save(tmp_path / "wide.npy", np.ones((5, 2)))
    assert "expected shape (N, 1)" in _error(["flow", "score", str(model), str(tmp_path / "wide.npy")], capsys)


def test_flow_help_lists_the_sub_commands():
    result = subprocess.run(
        [sys.executable, "-m", "pyroflows", "flow", "fit", "--help"], capture_output=True, text=True, check=True
    )
    assert "--transform {radial,spline,autoregressive}" in result.stdout
    # The choices, their help and the default rule come from the family registry (one home for the default).
    from pyroflows.flows.families import DEFAULT_TRANSFORM_RULE, FAMILIES

    text = " ".join(result.stdout.split())
    assert f"(default: {DEFAULT_TRANSFORM_RULE})" in text
    assert all(f"{name}: {' '.join(FAMILIES.get(name).help.split())}" in text for name in FAMILIES)
    assert "example:" in result.stdout


def test_negative_bounds_parse_without_equals(tmp_path, capsys):
    path = tmp_path / "box.npy"
    np.save(path, np.random.default_rng(0).uniform(-0.4, 0.4, (50, 2)))
    out = tmp_path / "box.pt"
    argv = ["flow", "fit", str(path), "--low", "-0.5,-0.5", "--high", "0.5,0.5", "--out", str(out), "--steps", "1"]
    assert main([*argv, "--quiet", "--layers", "1"]) == 0
    assert CompactFlow.load(out).config["low"] == [-0.5, -0.5]
    err = _error(["flow", "fit", str(path), "--low=-1e308", "--high=1e308", "--out", str(tmp_path / "w.pt")], capsys)
    assert "too wide for float64" in err


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["config"].update(num_layers=10**9), "num_layers = 1000000000 is outside [0, 1000]"),
        (
            lambda c: c["config"].update(transform="nope"),
            "corrupt CompactFlow model file (transform: unknown 'nope'; expected one of",
        ),
        (lambda c: c["state_dict"].update({next(iter(c["state_dict"])): torch.zeros(7, 7)}), "size mismatch"),
        (lambda c: c.update(config=[1, 2]), "config is a list, not a dict"),
    ],
)
def test_a_corrupt_checkpoint_is_one_line_and_fast(model, data, tmp_path, capsys, change, message):
    checkpoint = torch.load(model, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, tmp_path / "bad.pt")
    assert message in _error(["flow", "score", str(tmp_path / "bad.pt"), str(data)], capsys)


def test_a_corrupt_first_csv_row_is_named_and_a_header_is_reported(model, tmp_path, capsys):
    path = tmp_path / "c.csv"
    path.write_text("1.5x\n" + "".join(f"{1.1 + 0.1 * i}\n" for i in range(10)))
    assert "line 1 is not numeric ('1.5x')" in _error(["flow", "score", str(model), str(path)], capsys)
    path.write_text("y\n" + "".join(f"{1.1 + 0.1 * i}\n" for i in range(10)))
    assert main(["flow", "score", str(model), str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n"] == 10
    assert captured.err == f"pyroflows: warning: {path}: line 1 ('y') was taken as a header, not data\n"


def test_fit_with_auto_ends_reports_the_choice_and_saves_the_kept_ends(data, tmp_path, capsys):
    """``--ends auto``: both candidates' held-out NLLs in the summary; the model file holds the kept ends."""
    out = tmp_path / "auto.pt"
    argv = ["flow", "fit", str(data), "--low", "1", "--high", "2.5", "--out", str(out), "--steps", "20", "--quiet"]
    assert main([*argv, "--ends", "auto", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    nlls = summary["ends_heldout_nll"]
    assert set(nlls) == {"free", "secant"} and summary["ends"] == min(nlls, key=nlls.get)
    assert summary["heldout_nll"] == nlls[summary["ends"]]
    assert CompactFlow.load(out).config["ends"] == summary["ends"]
    assert main([*argv, "--ends", "auto", "--force"]) == 0
    assert f"{summary['ends']} ends (chosen by held-out NLL: free " in capsys.readouterr().out


def test_fit_with_data_ends_reports_each_bounds_choice_and_saves_it(data, tmp_path, capsys):
    """``--ends data``: each bound's ends and exponent estimate in the summary; the model file holds the choice."""
    out = tmp_path / "data.pt"
    argv = ["flow", "fit", str(data), "--low", "1", "--high", "2.5", "--out", str(out), "--steps", "20", "--quiet"]
    assert main([*argv, "--ends", "data", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ends"] == "data" and summary["bound_ends"] == [["secant", "secant"]]  # uniform data: flat
    assert all(0.5 < a < 2 for a in summary["bound_exponents"][0])
    assert CompactFlow.load(out).config["bound_ends"] == summary["bound_ends"]
    assert main([*argv, "--ends", "data", "--force"]) == 0
    assert "data ends (lower secant (a = " in capsys.readouterr().out


def test_ends_choices_and_help_come_from_the_registry(capsys):
    from pyroflows.flows.families import SPLINE_ENDS

    assert main(["flow", "fit", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--ends {" + ",".join(SPLINE_ENDS.names()) + "}" in text
    assert " ".join(SPLINE_ENDS.help_text().split()) in text


def test_ends_with_a_conditional_flow_is_an_error(data, tmp_path, capsys):
    context = tmp_path / "x.npy"
    np.save(context, np.random.default_rng(0).normal(size=(400, 2)))
    argv = ["flow", "fit", str(data), "--context", str(context), "--low", "1", "--high", "2.5", "--ends", "secant",
            "--out", str(tmp_path / "c.pt")]  # fmt: skip
    assert "--ends: a conditional flow (--context) has Pyro's fixed spline ends" in _error(argv, capsys)
    assert not (tmp_path / "c.pt").exists()
