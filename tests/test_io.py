import numpy as np
import pytest

from pyroflows.errors import CheckpointError, DataError
from pyroflows.io import check_output_path, load_array, parse_bounds, save_array
from pyroflows.serialization import load_checkpoint, save_checkpoint


def test_npy_and_csv_round_trip_exactly(tmp_path):
    data = np.random.default_rng(0).normal(size=(7, 3))
    save_array(tmp_path / "a.npy", data)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), data)
    save_array(tmp_path / "a.csv", data)
    np.testing.assert_allclose(load_array(tmp_path / "a.csv"), data, rtol=1e-9)


def test_csv_with_header_and_single_column(tmp_path):
    (tmp_path / "h.csv").write_text("x\n1.0\n2.5\n")
    np.testing.assert_array_equal(load_array(tmp_path / "h.csv"), [1.0, 2.5])
    assert load_array(tmp_path / "h.csv", ndim=2).shape == (2, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("1,2\n3\n", "different numbers of columns"),
        ("1,2\nfoo,3\n", "line 2 is not numeric"),
        ("1\nnan\n3\ninf\n", r"2 row\(s\) hold NaN or inf, e.g. rows \[1, 3\]"),
    ],
)
def test_bad_csv_is_named(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_array(path)


def test_missing_corrupt_and_wrong_type(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable .npy"):
        load_array(tmp_path / "bad.npy")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(DataError, match="unsupported file type"):
        load_array(tmp_path / "x.txt")


def test_rank_checks(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(4.0))
    with pytest.raises(DataError, match=r"expected a 2-D array of shape \(N, D\)"):
        load_array(tmp_path / "v.npy", ndim=2, allow_1d=False)
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"expected shape \(N,\) or \(N, D\)"):
        load_array(tmp_path / "c.npy")


def test_output_is_never_silently_replaced(tmp_path):
    target = tmp_path / "keep.npy"
    target.write_bytes(b"user data")
    with pytest.raises(DataError, match="already exists"):
        save_array(target, np.zeros(2))
    assert target.read_bytes() == b"user data"
    save_array(target, np.zeros(2), overwrite=True)
    assert load_array(target).shape == (2,)
    with pytest.raises(DataError, match="is a directory"):
        check_output_path(tmp_path)


def test_parse_bounds():
    assert parse_bounds("1,2.5", name="--low") == [1.0, 2.5]
    with pytest.raises(DataError, match="--high: expected a number"):
        parse_bounds("a", name="--high")
    with pytest.raises(DataError, match="finite"):
        parse_bounds("inf", name="--high")


def test_checkpoint_round_trip_and_errors(tmp_path):
    import torch

    module = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.pt", kind="Linear", config={"a": [1, 2]}, state_dict=module.state_dict())
    loaded = load_checkpoint(path, kind="Linear")
    assert loaded["config"] == {"a": [1, 2]}
    for key, value in module.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)
    with pytest.raises(CheckpointError, match="holds a Linear model, expected a DDPM"):
        load_checkpoint(path, kind="DDPM")
    with pytest.raises(DataError, match="already exists"):
        save_checkpoint(path, kind="Linear", config={}, state_dict={})
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="not a readable pyroflows model file"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="no such model file"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a pyroflows model file"):
        load_checkpoint(tmp_path / "foreign.pt")
