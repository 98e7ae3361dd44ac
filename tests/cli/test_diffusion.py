"""``pyroflows diffusion train|sample|nll`` end to end on tiny data, and its one-line errors."""

import json

import numpy as np
import pytest

from pyroflows.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import pyro

    pyro.clear_param_store()
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    data = np.c_[rng.normal(1000.0, 50.0, 200), rng.normal(-3e-3, 1e-3, 200), rng.uniform(0, 1, 200)]
    np.savetxt(root / "data.csv", data, delimiter=",", header="a,b,c", comments="")
    model = root / "m.pt"
    assert main(["diffusion", "train", str(root / "data.csv"), "--out", str(model), "--epochs", "5", "--quiet"]) == 0
    return root, model, data


def test_train_sample_nll(trained, capsys):
    root, model, data = trained
    out = root / "s.npy"
    assert main(["diffusion", "sample", str(model), "-n", "30", "--out", str(out), "--seed", "1"]) == 0
    samples = np.load(out)
    assert samples.shape == (30, 3)
    # samples come back in data units (the scaler is part of the model)
    assert 500 < samples[:, 0].mean() < 1500
    again = root / "s2.npy"
    assert main(["diffusion", "sample", str(model), "-n", "30", "--out", str(again), "--seed", "1"]) == 0
    assert np.array_equal(samples, np.load(again))
    ddim = root / "d.csv"
    args = ["diffusion", "sample", str(model), "-n", "5", "--out", str(ddim), "--sampler", "ddim"]
    assert main([*args, "--sampling-steps", "3"]) == 0
    assert np.loadtxt(ddim, delimiter=",").shape == (5, 3)
    capsys.readouterr()
    assert main(["diffusion", "nll", str(model), str(root / "data.csv"), "--json", "--particles", "2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"nll", "se", "n"} and payload["n"] == 200 and payload["se"] > 0
    assert np.isfinite(payload["nll"])


def test_train_on_a_built_in_dataset(tmp_path, capsys):
    out = tmp_path / "moons.pt"
    args = ["diffusion", "train", "--dataset", "moons", "--n-points", "100", "--out", str(out), "--epochs", "3"]
    assert main([*args, "--steps", "4", "--schedule", "cosine", "--quiet"]) == 0
    assert "trained a DDPM (T = 4, cosine schedule" in capsys.readouterr().out
    assert main([*args, "--quiet"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--quiet", "--force"]) == 0


def _error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyroflows: error: ") and err.count("\n") == 1
    return err


def test_bad_input_gives_one_line_errors(trained, tmp_path, capsys):
    root, model, _ = trained
    out = str(tmp_path / "m.pt")
    nan = tmp_path / "nan.csv"
    np.savetxt(nan, np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]]), delimiter=",")
    assert "NaN or inf" in _error(["diffusion", "train", str(nan), "--out", out], capsys)
    one_d = tmp_path / "one.npy"
    np.save(one_d, np.arange(10.0))
    assert "1-D array" in _error(["diffusion", "train", str(one_d), "--out", out], capsys)
    const = tmp_path / "const.npy"
    np.save(const, np.c_[np.arange(10.0), np.full(10, 7.0)])
    assert "[1] are constant" in _error(["diffusion", "train", str(const), "--out", out, "--epochs", "1"], capsys)
    assert "argument --steps: expected an integer >= 1" in _error(
        ["diffusion", "train", "--dataset", "moons", "--out", out, "--steps", "0"], capsys
    )
    assert "not both" in _error(["diffusion", "train", str(const), "--dataset", "moons", "--out", out], capsys)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    assert "not a readable" in _error(
        ["diffusion", "sample", str(corrupt), "-n", "3", "--out", str(tmp_path / "a.npy")], capsys
    )
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 2)))
    assert "trained on 3 column(s)" in _error(["diffusion", "nll", str(model), str(wrong)], capsys)
    too_many = ["diffusion", "sample", str(model), "-n", "3", "--out", str(tmp_path / "b.npy"), "--sampler", "ddim"]
    assert "sampling_steps" in _error([*too_many, "--sampling-steps", "99"], capsys)


def test_unknown_schedule_is_an_argparse_error(capsys):
    assert "invalid choice: 'sigmoid'" in _error(
        ["diffusion", "train", "--dataset", "moons", "--out", "x.pt", "--schedule", "sigmoid"], capsys
    )


def test_nll_of_one_row_is_valid_json(trained, tmp_path, capsys):
    root, model, data = trained
    np.save(tmp_path / "one.npy", data[:1])
    capsys.readouterr()
    assert main(["diffusion", "nll", str(model), str(tmp_path / "one.npy"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)  # strict JSON: no NaN
    assert payload["n"] == 1 and payload["se"] is None and np.isfinite(payload["nll"])


def test_a_diverged_training_is_a_failure_naming_the_step_and_nothing_is_saved(tmp_path, capsys):
    out = tmp_path / "big" / "m.pt"
    argv = ["diffusion", "train", "--dataset", "moons", "--n-points", "100", "--epochs", "5", "--out", str(out)]
    err = _error([*argv, "--lr", "1e30", "--quiet"], capsys)
    assert "the training diverged at optimizer step" in err and "loss nan" in err
    assert not (tmp_path / "big").exists()
    assert "argument --lr: expected a finite number > 0, got 0" in _error([*argv, "--lr", "0"], capsys)
