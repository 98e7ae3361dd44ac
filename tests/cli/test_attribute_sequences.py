"""``pyroflows attribute`` and ``pyroflows evaluate`` on sequences: maps written, bad layouts refused in one line."""

import inspect

import numpy as np
import torch
from torch import nn

from pyroflows.cli import main
from pyroflows.cli.attribute import _load_user_model
from pyroflows.datasets import make_keyword_sequences, make_motif_sequences


def test_attribute_shipped_sequence_models(tmp_path, capsys):
    motifs = make_motif_sequences(4, split="test", seed=2)
    tokens = make_keyword_sequences(3, split="test", seed=2)
    np.save(tmp_path / "dna.npy", motifs.inputs.numpy())
    np.save(tmp_path / "tokens.npy", tokens.inputs.numpy())
    out = tmp_path / "maps"
    argv = ["attribute", str(tmp_path / "dna.npy"), "--model", "motifs", "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    maps = np.load(out / "dna.npy")
    assert maps.shape == (4, 100) and (maps >= 0).all() and (out / "dna.png").stat().st_size > 1000
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    argv = ["attribute", str(tmp_path / "tokens.npy"), "--model", "keywords", "--steps", "2", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    token_maps = np.load(out / "tokens.npy")
    assert token_maps.shape == (3, 24) and (token_maps[tokens.padding.numpy()] == 0).all()
    assert '"layer": "encoder.layers.0"' in capsys.readouterr().out


def test_attribute_a_user_sequence_model_and_refuse_a_wrong_channel_dim(tmp_path, capsys):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 6, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(),
                          nn.Linear(6, 2))  # fmt: skip
    data = make_motif_sequences(40, length=30, seed=1).inputs
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model.eval(), (data[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "model.pt2")
    np.save(tmp_path / "train.npy", data.numpy())
    np.save(tmp_path / "x.npy", data[:2].numpy())
    base = ["attribute", str(tmp_path / "x.npy"), "--model", str(tmp_path / "model.pt2"), "--layer", "1",
            "--data", str(tmp_path / "train.npy"), "--steps", "2", "--out", str(tmp_path / "o")]  # fmt: skip
    if "trust" in inspect.signature(_load_user_model).parameters:  # pickled models need the explicit opt-in
        base.append("--trust-model-file")
    assert main([*base, "--channel-dim", "-1"]) == 2
    err = capsys.readouterr().err
    assert "pass channel_dim=1" in err and len(err.strip().splitlines()) == 1
    assert main(base) == 0
    assert np.load(tmp_path / "o" / "x.npy").shape == (2, 30)


def test_evaluate_a_sequence_task(tmp_path, capsys):
    out = tmp_path / "table"
    argv = ["evaluate", "--task", "motifs", "--methods", "random,saliency,per-sample", "--n-images", "3",
            "--n-masks", "3", "--sensitivity-steps", "1", "--sanity-images", "1", "--estimation-images", "100",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    table = (out / "table.md").read_text()
    assert "| span | top1 |" in table and "| per-sample |" in table
    assert (out / "maps.png").exists() and (out / "degradation_5.png").exists()
    assert main([*argv[:3], "--model", "x.pt", "--out", str(tmp_path / "t2")]) == 2
