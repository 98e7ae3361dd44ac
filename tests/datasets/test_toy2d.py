"""2-D toy sets: shapes, reproducible seeds, independent draws (unlike sklearn's fixed grid)."""

import numpy as np
import pytest

from pyroflows.datasets import TOY2D_DATASETS, make_dataset


@pytest.mark.parametrize("name", sorted(TOY2D_DATASETS))
def test_shape_seed_and_independence(name):
    a = make_dataset(name, 500, seed=0)
    assert a.shape == (500, 2) and np.isfinite(a).all()
    assert np.array_equal(a, make_dataset(name, 500, seed=0))
    b = make_dataset(name, 500, seed=1)
    assert not np.isclose(a[:, None, :], b[None, :, :]).all(-1).any()


def test_moons_are_iid_along_the_arcs():
    # Two moons without noise lie on the arcs; the arc positions should look uniform, not on a grid.
    x = make_dataset("moons", 4000, seed=3)
    assert abs(x[:, 0].mean() - 0.5) < 0.05 and abs(x[:, 1].mean() - 0.25) < 0.05


def test_unknown_name_and_bad_size():
    from pyroflows.errors import DataError

    with pytest.raises(DataError, match="unknown data set 'spiral'"):
        make_dataset("spiral", 10)
    with pytest.raises(DataError, match="at least 1 point"):
        make_dataset("moons", 0)
