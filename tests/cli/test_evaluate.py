"""``pyroflows evaluate`` end to end on the bundled model (tiny sizes), refusing to overwrite, bad input."""

import csv
import json

from pyroflows.cli import main

TINY = ["--n-images", "3", "--n-masks", "3", "--sensitivity-steps", "2", "--sanity-images", "1"]
TINY += ["--estimation-images", "20", "--no-progress"]


def test_writes_table_and_plots_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "evaluation"
    assert main(["evaluate", "--methods", "random,saliency", *TINY, "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [row["method"] for row in payload["rows"]] == ["random", "saliency"] and payload["images"] == 3
    for name in ("table.md", "table.csv", "degradation_8.png", "degradation_14.png", "sensitivity_n_1.png",
                 "sensitivity_n_8.png", "sanity_check.png", "maps.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"method", "degradation_8", "degradation_14", "bbox", "sensitivity_n", "sanity_ssim"} <= set(rows[0])
    assert rows[0]["sanity"] == "fail"  # a fixed random map does not depend on the model
    assert "| saliency |" in (out / "table.md").read_text()

    assert main(["evaluate", "--methods", "random", *TINY, "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["evaluate", "--methods", "random", *TINY, "--out", str(out), "--force"]) == 0


def test_unknown_method_and_bad_sizes_end_in_one_line(tmp_path, capsys):
    assert main(["evaluate", "--methods", "saliency,gradcam", "--out", str(tmp_path)]) == 2
    assert "--methods: unknown ['gradcam']" in capsys.readouterr().err
    assert main(["evaluate", "--n-images", "0", "--out", str(tmp_path)]) == 2
    assert "argument --n-images: expected an integer >= 1" in capsys.readouterr().err
