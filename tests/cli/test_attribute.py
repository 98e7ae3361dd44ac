"""``pyroflows attribute``: outputs written, bad input refused with one line, nothing silently replaced."""

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn

from pyroflows.cli import main
from pyroflows.datasets import make_cluttered_digits


@pytest.fixture(scope="module")
def digits():
    return make_cluttered_digits(2, split="test", seed=4)


def test_attribute_npy_and_png_with_the_bundled_model(tmp_path, digits, capsys):
    np.save(tmp_path / "a.npy", digits.images[0, 0].numpy())
    matplotlib.image.imsave(tmp_path / "b.png", np.repeat(digits.images[1, 0].numpy()[..., None], 3, -1))
    out = tmp_path / "maps"
    argv = ["attribute", str(tmp_path / "a.npy"), str(tmp_path / "b.png"), "--out", str(out), "--steps", "3"]
    assert main(argv) == 0
    for stem in ("a", "b"):
        heatmap = np.load(out / f"{stem}.npy")
        assert heatmap.shape == (56, 56) and (heatmap >= 0).all() and heatmap.max() > 0
        assert (out / f"{stem}.png").stat().st_size > 1000
    assert "bits/pixel" in capsys.readouterr().out
    # Existing outputs are refused without --force, before any work.
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--force", "--method", "readout", "--json"]) == 0
    assert '"method": "readout"' in capsys.readouterr().out


def test_attribute_refuses_bad_images(tmp_path, capsys):
    np.save(tmp_path / "small.npy", np.zeros((28, 28), np.float32))
    assert main(["attribute", str(tmp_path / "small.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "is 28 x 28 pixels; the model takes 56 x 56" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert main(["attribute", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "unsupported image type" in capsys.readouterr().err
    bad = np.zeros((56, 56), np.float32)
    bad[3, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(["attribute", str(tmp_path / "nan.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "NaN" in capsys.readouterr().err


def test_attribute_refuses_bad_data_files(tmp_path, capsys):
    np.save(tmp_path / "img.npy", np.zeros((56, 56), np.float32))
    argv = ["attribute", str(tmp_path / "img.npy"), "--out", str(tmp_path / "o"), "--data"]
    assert main([*argv, str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy: no such data file" in capsys.readouterr().err
    (tmp_path / "corrupt.npy").write_bytes(b"not numpy")
    assert main([*argv, str(tmp_path / "corrupt.npy")]) == 2
    assert "corrupt.npy: not a readable numeric .npy file" in capsys.readouterr().err
    np.save(tmp_path / "nan.npy", np.full((3, 1, 56, 56), np.nan, np.float32))
    assert main([*argv, str(tmp_path / "nan.npy")]) == 2
    assert not (tmp_path / "o").exists()  # a failed command leaves no output directory behind
    assert "nan.npy: expected finite inputs [N, ...]" in capsys.readouterr().err
    (tmp_path / "file").write_text("mine")
    assert main(["attribute", str(tmp_path / "img.npy"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file, expected a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


def test_attribute_with_a_user_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 5))
    torch.save(model, tmp_path / "model.pt")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(64, 3, 12, 12)).astype(np.float32))
    np.save(tmp_path / "img.npy", np.random.default_rng(1).normal(size=(3, 12, 12)).astype(np.float32))
    base = ["attribute", str(tmp_path / "img.npy"), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "model.pt")]
    assert main(base) == 2  # a pickle runs code when loaded: refused without the explicit flag
    assert "needs --trust-model-file" in capsys.readouterr().err
    base.append("--trust-model-file")
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "pyroflows: warning:" in err and "runs code from the file" in err  # said on every use
    assert "needs --layer NAME and --data" in err
    assert main([*base, "--layer", "1", "--data", str(tmp_path / "data.npy"), "--steps", "2", "--target", "3"]) == 0
    assert np.load(tmp_path / "o" / "img.npy").shape == (12, 12)
    assert main([*base, "--layer", "nope", "--data", str(tmp_path / "data.npy"), "--force"]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err


# torch deprecates TorchScript; the test still writes a TorchScript file, a format users have and the package reads.
@pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.(script|save)` is deprecated:DeprecationWarning:torch\.jit\._(script|serialization)"
)
def test_attribute_with_an_exported_program_runs_no_pickled_code(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12 * 12, 5)).eval()
    example = torch.randn(2, 3, 12, 12)
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: batch},)), tmp_path / "model.pt2")
    torch.jit.save(torch.jit.script(model), tmp_path / "model.ts")
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(32, 3, 12, 12)).astype(np.float32))
    np.save(tmp_path / "img.npy", np.random.default_rng(1).normal(size=(3, 12, 12)).astype(np.float32))
    argv = ["attribute", str(tmp_path / "img.npy"), "--out", str(tmp_path / "o"), "--layer", "1", "--data",
            str(tmp_path / "data.npy"), "--steps", "2", "--target", "3"]  # fmt: skip
    assert main([*argv, "--model", str(tmp_path / "model.pt2")]) == 0  # no --trust-model-file needed
    maps = np.load(tmp_path / "o" / "img.npy")
    assert maps.shape == (12, 12) and np.isfinite(maps).all()
    capsys.readouterr()
    # TorchScript loads without pickled code too, but takes no hooks: a one-line error, nothing written.
    assert main([*argv, "--model", str(tmp_path / "model.ts"), "--out", str(tmp_path / "ts")]) == 2
    assert "TorchScript model takes no hooks" in capsys.readouterr().err
    assert not (tmp_path / "ts").exists()
    # The same shapes run through the user's model: a 4-D --data for a 1-D convolution is a one-line error.
    conv1d = nn.Sequential(nn.Conv1d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 2)).eval()
    seq = torch.randn(2, 3, 12)
    torch.export.save(torch.export.export(conv1d, (seq,), dynamic_shapes=({0: batch},)), tmp_path / "seq.pt2")
    argv[argv.index(str(tmp_path / "o"))] = str(tmp_path / "o2")
    assert main([*argv, "--model", str(tmp_path / "seq.pt2")]) == 2
    err = capsys.readouterr().err
    assert "the model cannot run on inputs of shape [3, 12, 12]" in err and err.count("\n") == 1
