import os
import warnings

import numpy as np
import pytest
import torch

from pyroflows.errors import CheckpointError, DataError
from pyroflows.io import (
    HeaderWarning,
    atomic_outputs,
    atomic_write,
    check_output_dir,
    check_output_path,
    load_array,
    parse_bounds,
    save_array,
)
from pyroflows.serialization import check_config, load_checkpoint, restore_module, save_checkpoint


def test_npy_and_csv_round_trip_exactly(tmp_path):
    data = np.random.default_rng(0).normal(size=(7, 3))
    save_array(tmp_path / "a.npy", data)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), data)
    save_array(tmp_path / "a.csv", data)
    np.testing.assert_allclose(load_array(tmp_path / "a.csv"), data, rtol=1e-9)


def test_csv_with_header_and_single_column(tmp_path):
    (tmp_path / "h.csv").write_text("x\n1.0\n2.5\n")
    with pytest.warns(HeaderWarning, match=r"line 1 \('x'\) was taken as a header"):
        np.testing.assert_array_equal(load_array(tmp_path / "h.csv"), [1.0, 2.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit header= says nothing
        assert load_array(tmp_path / "h.csv", ndim=2, header=True).shape == (2, 1)


def test_a_corrupt_first_row_is_an_error_not_a_header(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("1.5x\n" + "".join(f"{0.1 * i}\n" for i in range(10)))
    with pytest.raises(DataError, match=r"line 1 is not numeric \('1.5x'\) and does not look like a header"):
        load_array(path)
    assert load_array(path, header=True).shape == (10,)  # the user says it is a header
    with pytest.raises(DataError, match="line 1 is not numeric"):
        load_array(path, header=False)
    path.write_text("x,y\n1,2\n")
    with pytest.warns(HeaderWarning):
        assert load_array(path).shape == (1, 2)


def test_complex_npy_is_rejected(tmp_path):
    np.save(tmp_path / "z.npy", np.array([1 + 2j, 3.0]))
    with pytest.raises(DataError, match="holds complex numbers"):
        load_array(tmp_path / "z.npy")


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


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    keep = tmp_path / "keep.npy"
    np.save(keep, np.arange(10.0))
    before = keep.read_bytes()

    def fails_half_way(tmp):
        tmp.write_bytes(b"half a file")
        raise OSError(27, "File too large")  # what a file-size limit (ulimit -f) raises

    with pytest.raises(DataError, match=r"keep.npy: writing failed \(File too large\); nothing was replaced"):
        atomic_write(keep, fails_half_way, overwrite=True)
    assert keep.read_bytes() == before and _listing(tmp_path) == ["keep.npy"]
    # Folders made for the output are removed again, also after Ctrl-C.
    with pytest.raises(KeyboardInterrupt):
        with atomic_outputs() as out:
            out.write(tmp_path / "a" / "b" / "x.npy", lambda tmp: tmp.write_bytes(b"x"))
            raise KeyboardInterrupt
    assert _listing(tmp_path) == ["keep.npy"]


def test_writes_use_a_unique_temporary_name_and_never_touch_the_users_tmp_file(tmp_path):
    (tmp_path / "m.pt.tmp").write_text("the user's own file")
    seen = []
    save_checkpoint(tmp_path / "m.pt", kind="Linear", config={}, state_dict=torch.nn.Linear(1, 1).state_dict())
    atomic_write(tmp_path / "t.txt", lambda tmp: seen.append(tmp) or tmp.write_text("x"))
    assert (tmp_path / "m.pt.tmp").read_text() == "the user's own file"
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".t.txt.") and seen[0].suffix == ".txt"
    assert _listing(tmp_path) == ["m.pt", "m.pt.tmp", "t.txt"]


def test_a_group_of_outputs_is_all_or_nothing(tmp_path):
    (tmp_path / "b.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_outputs(overwrite=True) as out:
            out.write(tmp_path / "new" / "a.txt", lambda tmp: tmp.write_text("a"))
            out.write(tmp_path / "b.txt", lambda tmp: tmp.write_text("b"))
            raise RuntimeError("the second map failed")
    assert _listing(tmp_path) == ["b.txt"] and (tmp_path / "b.txt").read_text() == "old"


def test_output_paths_are_checked_without_creating_anything(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot be created, .*file is a file, not a folder"):
        check_output_path(tmp_path / "file" / "sub" / "s.npy")
    with pytest.raises(DataError, match="is a file, expected a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(DataError, match="already exists"):
        check_output_dir(tmp_path, ["file"])
    assert check_output_path(tmp_path / "new" / "deeper" / "s.npy").name == "s.npy"
    assert _listing(tmp_path) == ["file"]
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere; pretend the folder is read-only as for any other user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real(p, mode))
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(DataError, match="cannot be written, the folder .*locked is read-only"):
            check_output_path(locked / "s.npy")
    finally:
        locked.chmod(0o755)


def test_checkpoint_config_and_weights_are_checked_on_load(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", kind="Linear", config={"n": 2, "num_layers": 3},
                           state_dict=torch.nn.Linear(2, 1).state_dict())  # fmt: skip
    module, _ = restore_module(path, kind="Linear", build=lambda c: torch.nn.Linear(c["n"], 1))
    assert module.weight.shape == (1, 2)
    with pytest.raises(CheckpointError, match=r"corrupt Linear model file \(RuntimeError: Error\(s\) in loading"):
        restore_module(path, kind="Linear", build=lambda c: torch.nn.Linear(3, 1))
    with pytest.raises(CheckpointError, match=r"corrupt Linear model file \(KeyError"):
        restore_module(path, kind="Linear", build=lambda c: torch.nn.Linear(c["missing"], 1))
    with pytest.raises(CheckpointError, match=r"num_layers = 1000000000 is outside \[0, 1000\]"):
        check_config(path, {"num_layers": 10**9})
    with pytest.raises(CheckpointError, match="implausibly large"):
        check_config(path, {"nested": {"width": 10**12}})
    nan_state = {k: torch.full_like(v, float("nan")) for k, v in torch.nn.Linear(2, 1).state_dict().items()}
    bad = save_checkpoint(tmp_path / "nan.pt", kind="Linear", config={"n": 2}, state_dict=nan_state)
    with pytest.raises(CheckpointError, match="holds NaN or infinity"):
        restore_module(bad, kind="Linear", build=lambda c: torch.nn.Linear(c["n"], 1))
