"""``pyroflows diffusion train --labels``, ``sample --label --guidance`` and ``impute`` end to end, and their
one-line errors."""

import numpy as np
import pytest

from pyroflows.cli import main
from pyroflows.diffusion import DDPM, impute


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    import pyro

    pyro.clear_param_store()
    root = tmp_path_factory.mktemp("cli_labels")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 150)
    data = np.array([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])[labels] + 0.2 * rng.standard_normal((150, 2))
    np.savetxt(root / "data.csv", data, delimiter=",")
    np.savetxt(root / "labels.csv", labels, fmt="%d")
    model = root / "m.pt"
    argv = ["diffusion", "train", str(root / "data.csv"), "--labels", str(root / "labels.csv"), "--out", str(model)]
    assert main([*argv, "--epochs", "5", "--quiet", "--steps", "4"]) == 0
    return root, model, data, labels


def _error(argv, capsys):
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    # The data file's warnings (a header row) come first, one line each; then the error, one line.
    assert all(line.startswith("pyroflows: warning: ") for line in lines[:-1]), lines
    assert lines and lines[-1].startswith("pyroflows: error: "), lines
    return lines[-1]


def test_labelled_train_and_sample(labelled, capsys):
    root, model, _, _ = labelled
    from pyroflows.diffusion import DDPM

    assert DDPM.load(model).num_classes == 3
    out = root / "s.npy"
    assert main(["diffusion", "sample", str(model), "-n", "20", "--label", "2", "--guidance", "1.5", "--out",
                 str(out)]) == 0  # fmt: skip
    assert "of class 2, guidance 1.5 (ancestral, 8 network evaluations each)" in capsys.readouterr().out
    assert np.load(out).shape == (20, 2)


def test_impute_csv_with_empty_cells(labelled, tmp_path, capsys):
    _, model, _, _ = labelled
    holes = tmp_path / "holes.csv"
    holes.write_text("a,b\n1.5,\n,-0.25\n,\n0.125,2.5\n")
    out = tmp_path / "filled.csv"
    argv = ["diffusion", "impute", str(model), str(holes), "--out", str(out), "--particles", "8"]
    assert main([*argv, "--imputations", "3", "--seed", "1"]) == 0
    assert "filled 4 missing entries in 3 of 4 rows (smc, 8 particles, 3 imputation(s)); wrote 12 rows" in (
        capsys.readouterr().out
    )
    filled = np.loadtxt(out, delimiter=",").reshape(3, 4, 2)
    assert np.isfinite(filled).all()
    assert np.all(filled[:, 0, 0] == 1.5) and np.all(filled[:, 1, 1] == -0.25)
    assert np.all(filled[:, 3] == [0.125, 2.5])
    again = tmp_path / "again.csv"
    assert main([*argv, "--imputations", "3", "--seed", "1", "--out", str(again)]) == 0
    assert np.array_equal(np.loadtxt(again, delimiter=","), filled.reshape(12, 2))
    for twist in ("forward", "denoiser"):  # --twist is impute(twist=...)
        path = tmp_path / f"{twist}.csv"
        assert main([*argv, "--imputations", "3", "--seed", "1", "--twist", twist, "--out", str(path)]) == 0
        rows = np.array([[1.5, np.nan], [np.nan, -0.25], [np.nan] * 2, [0.125, 2.5]])
        expected = impute(DDPM.load(model), rows, num_particles=8, num_imputations=3, seed=1, twist=twist)
        expected = expected.numpy().reshape(12, 2)
        assert np.allclose(np.loadtxt(path, delimiter=","), expected, equal_nan=True)
    assert "already exists" in _error([*argv], capsys)
    npy = tmp_path / "holes.npy"
    np.save(npy, np.array([[np.nan, 1.0]]))
    labels = tmp_path / "l.csv"
    np.savetxt(labels, [1], fmt="%d")
    assert main(["diffusion", "impute", str(model), str(npy), "--out", str(tmp_path / "r.npy"), "--method",
                 "replace", "--labels", str(labels), "--guidance", "2"]) == 0  # fmt: skip
    assert np.load(tmp_path / "r.npy")[0, 1] == 1.0


def test_bad_labels_and_imputation_input(labelled, tmp_path, capsys):
    root, model, data, labels = labelled
    out = str(tmp_path / "m.pt")
    train = ["diffusion", "train", str(root / "data.csv"), "--out", out, "--epochs", "1", "--quiet", "--labels"]
    short = tmp_path / "short.csv"
    np.savetxt(short, labels[:-1], fmt="%d")
    assert "expected 150 labels (one per row of DATA), got 149" in _error([*train, str(short)], capsys)
    nan = tmp_path / "nan.csv"
    np.savetxt(nan, np.r_[labels[:-1], np.nan])
    assert "NaN or inf, e.g. rows [149]" in _error([*train, str(nan)], capsys)
    frac = tmp_path / "frac.csv"
    np.savetxt(frac, np.r_[labels[:-1], 0.5])
    assert "must be integers" in _error([*train, str(frac)], capsys)
    assert "out of range" in _error([*train, str(root / "labels.csv"), "--num-classes", "2"], capsys)
    sample = ["diffusion", "sample", str(model), "-n", "3", "--out", str(tmp_path / "s.npy")]
    assert "expected a class in 0..2, got 3" in _error([*sample, "--label", "3"], capsys)
    assert "--guidance needs --label" in _error([*sample, "--guidance", "2"], capsys)
    impute = ["diffusion", "impute", str(model)]
    inf = tmp_path / "inf.npy"
    np.save(inf, np.array([[np.inf, np.nan]]))
    assert "NaN or inf" in _error([*impute, str(inf), "--out", str(tmp_path / "f.npy")], capsys)
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((2, 3)))
    assert "trained on 2 column(s)" in _error([*impute, str(wide), "--out", str(tmp_path / "f.npy")], capsys)
    holes = tmp_path / "holes.npy"
    np.save(holes, np.array([[np.nan, 0.0]]))
    assert "--particles" in _error([*impute, str(holes), "--out", str(tmp_path / "f.npy"), "--particles", "0"], capsys)
    assert "expected 1 labels" in _error(
        [*impute, str(holes), "--out", str(tmp_path / "f.npy"), "--labels", str(root / "labels.csv")], capsys
    )
    assert not (tmp_path / "f.npy").exists()


def test_label_dropout_default_is_the_librarys():
    from pyroflows.cli import build_parser
    from pyroflows.diffusion.training import DEFAULT_LABEL_DROPOUT

    argv = ["diffusion", "train", "data.csv", "--labels", "labels.csv", "--out", "m.pt"]
    assert build_parser(argv).parse_args(argv).label_dropout == DEFAULT_LABEL_DROPOUT
    assert build_parser(argv).parse_args([*argv, "--label-dropout", "0.5"]).label_dropout == 0.5
