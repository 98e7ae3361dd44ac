"""evaluate_methods: one row per method from the same metric code, unsupported methods as n/a rows, outputs."""

import csv
import math

import torch

from pyroflows.evaluation import (
    TABLE_COLUMNS,
    MethodNotSupported,
    degradation_curves,
    evaluate_methods,
    make_attribute_fn,
)

from ._models import images, tiny_cnn


def _unsupported(model, inputs, target):
    raise MethodNotSupported("not for this model")


def test_rows_come_from_the_metric_functions_and_unsupported_methods_become_na(tmp_path):
    model, x = tiny_cnn(side=16), images(6)
    target = model(x).argmax(1)
    methods = {
        "saliency": make_attribute_fn("saliency"),
        "random": make_attribute_fn("random"),
        "broken": _unsupported,
    }
    table = evaluate_methods(
        model, x, target, methods, degradation_tiles=(4, 8), sensitivity_tiles=(1, 4), sensitivity_steps=3,
        n_masks=8, sanity_images=2, progress=False,
    )  # fmt: skip
    rows = {row["method"]: row for row in table.rows()}
    assert list(rows) == ["saliency", "random", "broken"]
    maps = make_attribute_fn("saliency")(model, x, target)
    expected = degradation_curves(model, x, maps, target, tile_size=4).score()
    assert math.isclose(rows["saliency"]["degradation_4"], expected, rel_tol=1e-6)
    assert rows["random"]["sanity"] == "fail" and math.isclose(rows["random"]["sanity_ssim"], 1.0, rel_tol=1e-6)
    assert rows["broken"]["sanity"] == "n/a" and rows["broken"]["note"] == "not for this model"
    assert "bbox" not in rows["broken"]
    for column in ("method", "sensitivity_n", "sanity_ssim", "sanity", "seconds_per_image"):
        assert column in table.columns()
    markdown = table.to_markdown()
    assert markdown.splitlines()[0].startswith("| method | degradation_4 | degradation_8 |")
    assert "| broken | n/a | n/a | n/a |" in markdown and "| not for this model |" in markdown
    table.to_csv(tmp_path / "table.csv")
    with open(tmp_path / "table.csv") as handle:
        assert [r["method"] for r in csv.DictReader(handle)] == ["saliency", "random", "broken"]
    written = table.save_plots(tmp_path, tile_sizes=(4, 8))
    assert sorted(p.name for p in written) == [
        "degradation_4.png", "degradation_8.png", "sanity_check.png", "sensitivity_n_1.png", "sensitivity_n_4.png",
    ]  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in written)


def test_default_columns_cover_the_papers_table():
    assert TABLE_COLUMNS[:6] == ("method", "degradation_8", "degradation_14", "bbox", "sensitivity_n", "sanity_ssim")


def test_bad_target_and_boxes_are_rejected():
    import pytest

    from pyroflows.errors import DataError

    model, x = tiny_cnn(), images(2)
    with pytest.raises(DataError, match=r"target: expected an int or 2 class indices \(one per row\), got shape"):
        evaluate_methods(model, x, torch.tensor([0, 1, 2]), ["random"], progress=False)
    with pytest.raises(DataError, match=r"boxes must be \[N, 4\] = \[2, 4\]"):
        evaluate_methods(model, x, 0, ["random"], boxes=torch.zeros(2, 3), progress=False)


def test_bbox_column_is_the_mean_score_over_boxes_covering_at_most_a_third():
    from pyroflows.evaluation import bounding_box_score

    model, x = tiny_cnn(), images(3)
    target = torch.tensor([0, 1, 2])
    boxes = torch.tensor([[0, 0, 8, 8], [4, 4, 12, 12], [0, 0, 16, 10]])  # the last covers 62% of the image
    table = evaluate_methods(
        model, x, target, ["saliency"], boxes=boxes, degradation_tiles=(8,), sensitivity_tiles=(), sanity_images=0,
        progress=False,
    )  # fmt: skip
    maps = make_attribute_fn("saliency")(model, x, target)
    expected = bounding_box_score(maps, boxes)[:2].double().mean()
    row = table.rows()[0]
    assert math.isclose(row["bbox"], float(expected), rel_tol=1e-9)
    assert row["sanity"] == "not run" and math.isnan(row["sensitivity_n"])
