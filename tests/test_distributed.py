"""pyroflows on 2 gloo processes (CPU) against one process: attribution, statistics, evaluation, training, failures.

One ``torch.multiprocessing`` spawn runs every scenario on 2 ranks (importing torch and Pyro dominates its cost);
each test compares one scenario's per-rank results with the same calls made here in one process. Tolerances are
float rounding: the ranks run the same code on shards, so only the batch composition (the order of the float
sums inside a convolution, Chan's merge of the moments in another grouping) differs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
import torch.multiprocessing as mp

from pyroflows import distributed

# The one-process references run in this process, the ranks in spawned or torchrun workers, under torch's default.
pytestmark = pytest.mark.float32(reason="compared with worker processes, which run under torch's default float32")

WORLD = 2
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------------- scenarios
# Each scenario is called with the same arguments in the workers (inside the process group) and in the test
# (one process), and returns plain tensors/lists to compare.


def _digits():
    from pyroflows.attribution import BUNDLED_LAYER, load_bundled_model
    from pyroflows.datasets import make_cluttered_digits

    model = load_bundled_model()
    train = make_cluttered_digits(37, split="train", seed=1)
    test = make_cluttered_digits(5, split="test", seed=0)
    return model, BUNDLED_LAYER, train, test


def scenario_per_sample() -> dict:
    from pyroflows.attribution import PerSampleBottleneck

    model, layer, train, test = _digits()
    pyro.set_rng_seed(3)
    bottleneck = PerSampleBottleneck(model, layer, steps=3).estimate(train.images)  # 37 images: 19 + 18
    maps = bottleneck.attribute(test.images, test.labels)  # 5 images: 3 + 2
    return {"mean": bottleneck.mean, "std": bottleneck.std, "active": bottleneck.active,
            "n": bottleneck.n_samples, "maps": maps}  # fmt: skip


def scenario_readout() -> dict:
    from pyroflows.attribution import ReadoutBottleneck

    model, layer, train, test = _digits()
    # Batches of uneven sizes, 7 of them (4 on rank 0, 3 on rank 1), cut at 30 samples by max_samples.
    sizes = [5, 3, 6, 4, 7, 2, 10]
    starts = np.cumsum([0, *sizes])
    batches = [(train.images[a:b], train.labels[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    pyro.set_rng_seed(4)
    readout = ReadoutBottleneck(model, layer, readout_layers=["features.3", layer], hidden=8)
    readout.estimate(batches, max_samples=30)
    pyro.set_rng_seed(5)
    history = readout.fit([(train.images[:8], train.labels[:8]), (train.images[8:17], train.labels[8:17])],
                          epochs=2, lr=1e-2, particles=2)  # fmt: skip
    return {
        "mean": readout.mean, "std": readout.std, "n": readout.n_samples,
        "readout_mean": readout.readout_mean, "readout_std": readout.readout_std, "history": history,
        "weights": {k: v.clone() for k, v in readout.network.state_dict().items()},
        "maps": readout.attribute(test.images),
    }  # fmt: skip


def scenario_evaluation() -> dict:
    from pyroflows.evaluation import MethodContext, evaluate_methods

    model, layer, train, test = _digits()
    context = MethodContext(layer=layer, data=train.images[:20], seed=0, options={"steps": 2})
    table = evaluate_methods(
        model, test.images, test.labels, ["random", "saliency", "per-sample"], boxes=test.boxes, context=context,
        n_masks=3, sensitivity_steps=2, sanity_images=3, seed=0, progress=False,
    )  # fmt: skip
    rows = [{k: v for k, v in row.items() if k != "seconds_per_image"} for row in table.rows()]
    return {"rows": rows, "maps": {name: r.maps for name, r in table.results.items()}}


def scenario_ddpm() -> dict:
    from pyroflows.diffusion import DDPM, train

    pyro.set_rng_seed(6)
    ddpm = DDPM(data_dim=2, steps=5)
    data = torch.randn(45, 2)
    history = train(ddpm, data, epochs=3, batch_size=16, seed=0, progress=False)  # batches 16, 16, 13
    return {"history": history, "weights": {k: v.clone() for k, v in ddpm.state_dict().items()}}


def scenario_ddpm_labels() -> dict:
    """Class labels with label dropout: the dropped rows are drawn for the global batch, sliced with x."""
    from pyroflows.diffusion import DDPM, train

    pyro.set_rng_seed(9)
    ddpm = DDPM(data_dim=2, steps=5, num_classes=3)
    data, labels = torch.randn(45, 2), torch.arange(45) % 3
    history = train(ddpm, data, epochs=3, batch_size=16, seed=0, progress=False, labels=labels, label_dropout=0.4)
    return {"history": history, "weights": {k: v.clone() for k, v in ddpm.state_dict().items()}}


def scenario_sequences() -> dict:
    """Sequence attribution: one-hot DNA through a CNN layer shorter than its input (receptive field measured on
    rank 0's sample) and padded token ids through a transformer layer (channels last, a padding mask passed in
    additional_forward_args, sharded with the rows; masked moments merged with per-element counts)."""
    from pyroflows.attribution import PerSampleBottleneck, load_keyword_model, load_motif_model
    from pyroflows.datasets import make_keyword_sequences, make_motif_sequences

    pyro.set_rng_seed(10)
    cnn = load_motif_model()
    dna, test = make_motif_sequences(37, seed=1), make_motif_sequences(5, split="test")
    motif = PerSampleBottleneck(cnn, "features.1", steps=2).estimate(dna.inputs)
    motif_maps = motif.attribute(test.inputs, 1)
    tf = load_keyword_model()
    text, words = make_keyword_sequences(37, seed=1), make_keyword_sequences(5, split="test")
    with pytest.warns(UserWarning):  # nn.TransformerEncoder's layers are reached by hooks
        keyword = PerSampleBottleneck(tf, "encoder.layers.0", channel_dim=-1, padding_mask=0, steps=2)
    keyword.estimate(text.inputs, max_samples=33, additional_forward_args=(text.padding,))  # 17 + 16 rows
    keyword_maps = keyword.attribute(words.inputs, words.labels, additional_forward_args=(words.padding,))
    return {
        "motif_mean": motif.mean, "motif_std": motif.std, "motif_n": motif.n_samples, "motif_maps": motif_maps,
        "receptive": dict(motif._receptive_fields), "keyword_mean": keyword.mean, "keyword_std": keyword.std,
        "keyword_active": keyword.active, "keyword_n": keyword.n_samples, "keyword_maps": keyword_maps,
    }  # fmt: skip


def scenario_flow() -> dict:
    from pyroflows.flows import CompactFlow, ConditionalCompactFlow, fit
    from pyroflows.flows.fit import ConvergenceWarning

    pyro.set_rng_seed(7)
    flow = CompactFlow(0.0, 1.0, num_layers=2)  # the default spline carries a tail-slope prior: one global term
    assert flow.config.get("tail_prior")
    data = torch.distributions.Beta(2.0, 5.0).sample((70,))
    result = fit(flow, data, steps=12, eval_every=3, batch_size=21, seed=0, progress=False, patience=6)
    # A conditional flow: the context rows of this rank's share of the minibatch.
    context = torch.randn(70, 2)
    # Its weight prior (weight decay) is checked here; its trunk dropout draws each rank's masks from the rank's own
    # generator, so with it a sharded fit equals a one-process fit in distribution only: off for this comparison.
    conditional = ConditionalCompactFlow(0.0, 1.0, context_dim=2, dropout=0.0)
    assert conditional.weight_decays()
    with warnings.catch_warnings():  # 6 steps: under-fitted on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        cond = fit(conditional, data, context=context, steps=6, eval_every=3, batch_size=21, seed=1, progress=False)
    return {"train": result.train_nll, "heldout": result.heldout_nll, "best_eval": result.best_eval,
            "weights": {k: v.clone() for k, v in flow.state_dict().items()},
            "cond_train": cond.train_nll, "cond_heldout": cond.heldout_nll,
            "cond_weights": {k: v.clone() for k, v in conditional.state_dict().items()}}  # fmt: skip


def scenario_tiny() -> dict:
    """Fewer images than processes: rank 1's shard is empty (maps, a dataclass of curves, estimate's moments)."""
    from pyroflows.attribution import PerSampleBottleneck
    from pyroflows.evaluation import degradation_curves

    model, layer, train, test = _digits()
    pyro.set_rng_seed(8)
    one_batch = [(train.images[:5], train.labels[:5])]  # a loader of one batch: rank 1 estimates on nothing
    bottleneck = PerSampleBottleneck(model, layer, steps=2).estimate(one_batch)
    cut = PerSampleBottleneck(model, layer, steps=2).estimate(train.images[:7], max_samples=3)  # 2 + 1 samples
    maps = cut.attribute(test.images[:1])
    curves = distributed.map_shards(
        lambda x, m, t: degradation_curves(model, x, m, t, tile_size=14), test.images[:1], maps, test.labels[:1],
        concat={"morf": 0, "lerf": 0},
    )  # fmt: skip
    return {
        "n": bottleneck.n_samples, "std": bottleneck.std, "cut_n": cut.n_samples, "cut_std": cut.std,
        "maps": maps, "morf": curves.morf, "lerf": curves.lerf, "fraction": curves.fraction,
    }  # fmt: skip


def scenario_failure() -> dict:
    """Rank 1 raises inside a sharded call: both ranks must raise, none may hang."""

    def fails_on_rank_1(x: torch.Tensor) -> torch.Tensor:
        if distributed.rank() == 1:
            raise ValueError("injected failure on rank 1")
        return x * 2

    try:
        distributed.map_shards(fails_on_rank_1, torch.arange(6.0))
    except Exception as exc:  # noqa: BLE001 - the type and message are the result
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None}


SCENARIOS = {
    "per_sample": scenario_per_sample,
    "readout": scenario_readout,
    "evaluation": scenario_evaluation,
    "ddpm": scenario_ddpm,
    "ddpm_labels": scenario_ddpm_labels,
    "sequences": scenario_sequences,
    "flow": scenario_flow,
    "tiny": scenario_tiny,
    "failure": scenario_failure,
}


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, scenario in SCENARIOS.items():
            pyro.clear_param_store()
            results[name] = scenario()
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every scenario's results on each of the 2 ranks."""
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a, b, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], rtol, atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, rtol, atol)
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, equal_nan=True)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=rtol, abs=atol, nan_ok=True)
    else:
        assert a == b


def _one_process(name: str) -> dict:
    torch.set_num_threads(1)
    pyro.clear_param_store()
    with pyro.validation_enabled(False):  # as in the workers
        return SCENARIOS[name]()


# ----------------------------------------------------------------------------------------------------------- tests
def test_per_sample_maps_and_statistics_equal_one_process(ranks):
    reference = _one_process("per_sample")
    results = [r["per_sample"] for r in ranks]
    assert reference["n"] == 37
    for result in results:
        # Statistics are merged in float64: equal up to its rounding (then cast to float32 like one process's).
        _close(result["mean"], reference["mean"], rtol=1e-12, atol=1e-12)
        _close(result["std"], reference["std"], rtol=1e-12, atol=1e-12)
        assert torch.equal(result["active"], reference["active"]) and result["n"] == 37
        # Each rank optimised a different shard (3 or 2 images) and gathered all 5 maps: one process's maps.
        _close(result["maps"], reference["maps"], rtol=1e-4, atol=1e-3)
    assert torch.equal(results[0]["maps"], results[1]["maps"])  # the gathered maps are the same bits on every rank


def test_readout_statistics_training_and_maps_equal_one_process(ranks):
    reference = _one_process("readout")
    results = [r["readout"] for r in ranks]
    assert reference["n"] == 30
    for result in results:
        assert result["n"] == 30
        _close(result["mean"], reference["mean"], rtol=1e-12, atol=1e-12)
        _close(result["std"], reference["std"], rtol=1e-12, atol=1e-12)
        _close(result["readout_mean"], reference["readout_mean"], rtol=1e-6, atol=1e-7)
        _close(result["readout_std"], reference["readout_std"], rtol=1e-6, atol=1e-7)
        # Two epochs of two steps: the global loss of each step and the weights after them.
        _close(result["history"], reference["history"], rtol=1e-5, atol=1e-6)
        _close(result["weights"], reference["weights"], rtol=1e-4, atol=1e-6)
        _close(result["maps"], reference["maps"], rtol=1e-4, atol=1e-4)
    _close(results[0]["weights"], results[1]["weights"], rtol=0, atol=0)  # identical updates on every rank


def test_evaluation_table_equal_one_process(ranks):
    reference = _one_process("evaluation")
    results = [r["evaluation"] for r in ranks]
    for result in results:
        _close(result["rows"], reference["rows"], rtol=1e-4, atol=1e-5)
        _close(result["maps"], reference["maps"], rtol=1e-4, atol=1e-3)
    assert [row["method"] for row in results[0]["rows"]] == ["random", "saliency", "per-sample"]


def test_ddpm_training_equal_one_process(ranks):
    reference = _one_process("ddpm")
    results = [r["ddpm"] for r in ranks]
    assert len(reference["history"]) == 3
    for result in results:
        # The global batches of 16, 16 and 13 rows split 8/8 and 7/6; the loss of each epoch is the global one.
        _close(result["history"], reference["history"], rtol=1e-5, atol=1e-7)
        _close(result["weights"], reference["weights"], rtol=1e-4, atol=1e-6)


def test_ddpm_training_with_labels_equal_one_process(ranks):
    reference = _one_process("ddpm_labels")
    for result in (r["ddpm_labels"] for r in ranks):
        _close(result["history"], reference["history"], rtol=1e-5, atol=1e-7)
        _close(result["weights"], reference["weights"], rtol=1e-4, atol=1e-6)


def test_sequence_attribution_equal_one_process(ranks):
    reference = _one_process("sequences")
    assert reference["motif_n"] == 37 and reference["keyword_n"] == 33 and reference["receptive"]
    results = [r["sequences"] for r in ranks]
    for result in results:
        assert result["motif_n"] == 37 and result["keyword_n"] == 33
        # Moments of float32 features computed in other batches, merged in float64: float32 rounding of features.
        for key in ("motif_mean", "motif_std", "keyword_mean", "keyword_std"):
            _close(result[key], reference[key], rtol=1e-5, atol=1e-6)
        assert torch.equal(result["keyword_active"], reference["keyword_active"])
        _close(result["receptive"], reference["receptive"], rtol=0, atol=0)  # the same sample, the same code
        _close(result["motif_maps"], reference["motif_maps"], rtol=1e-4, atol=1e-3)
        _close(result["keyword_maps"], reference["keyword_maps"], rtol=1e-4, atol=1e-3)
        assert bool((result["keyword_maps"][reference["keyword_maps"] == 0] == 0).all())  # padding stays 0
    assert torch.equal(results[0]["keyword_maps"], results[1]["keyword_maps"])


def test_flow_fit_equal_one_process(ranks):
    reference = _one_process("flow")
    results = [r["flow"] for r in ranks]
    for result in results:
        _close(result["train"], reference["train"], rtol=1e-5, atol=1e-7)
        _close(result["heldout"], reference["heldout"], rtol=1e-5, atol=1e-7)
        assert result["best_eval"] == reference["best_eval"]
        _close(result["weights"], reference["weights"], rtol=1e-4, atol=1e-6)
        _close(result["cond_train"], reference["cond_train"], rtol=1e-5, atol=1e-7)
        _close(result["cond_heldout"], reference["cond_heldout"], rtol=1e-5, atol=1e-7)
        _close(result["cond_weights"], reference["cond_weights"], rtol=1e-4, atol=1e-6)


def test_fewer_images_than_processes(ranks):
    reference = _one_process("tiny")
    assert reference["n"] == 5 and reference["cut_n"] == 3
    for result in (r["tiny"] for r in ranks):
        _close(result, reference, rtol=1e-4, atol=1e-4)


def test_a_failing_rank_fails_every_rank(ranks):
    assert ranks[1]["failure"] == {"error": "ValueError", "message": "injected failure on rank 1"}
    assert ranks[0]["failure"]["error"] == "RankFailedError"
    assert ranks[0]["failure"]["message"] == "rank 1 of 2 failed: ValueError: injected failure on rank 1"


# --------------------------------------------------------------------------------------------- helpers, 1 process
def test_shard_ranges_cover_in_order():
    for n in range(0, 12):
        for world in range(1, 5):
            rows = [i for r in range(world) for i in distributed.shard_range(n, r, world)]
            assert rows == list(range(n))
            sizes = [len(distributed.shard_range(n, r, world)) for r in range(world)]
            assert max(sizes) - min(sizes) <= 1


def test_without_a_process_group_everything_is_local():
    x = torch.arange(5.0)
    assert not distributed.active() and distributed.shard(x) is x
    assert distributed.map_shards(lambda t: t + 1, x).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert distributed.all_sum(2.5) == 2.5
    with distributed.global_batch(7) as batch:
        assert batch.rows == slice(0, 7) and batch.weight == 1.0
        assert distributed.draw_rows(lambda m: torch.zeros(m), 7).shape == (7,)
    optim = pyro.optim.Adam({"lr": 1.0})
    cls = type(optim)
    assert distributed.synchronize_gradients(optim) is optim and type(optim) is cls


# --------------------------------------------------------------------------------------------------- torchrun CLI
_FAILING_MODEL = '''
import torch
from torch import nn


class FailsOnRank1(nn.Module):
    """The bundled CNN, raising on rank 1 for batches of 10 or more rows: in estimate() on its shard of the data,
    not on the 3 images the CLI first classifies (the data-dependent test also keeps torch.fx from splitting it)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if bool(x.sum() > -1e30) and x.shape[0] >= 10 and torch.distributed.is_initialized():
            if torch.distributed.get_rank() == 1:
                raise RuntimeError("injected failure on rank 1")
        return self.inner(x)
'''


def _torchrun(args: list[str], cwd: Path, extra_path: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), extra_path) if p)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
               "--master-port", str(_free_port()), "-m", "pyroflows", *args]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_attribute_writes_the_one_process_files(tmp_path):
    from pyroflows.cli import main
    from pyroflows.datasets import make_cluttered_digits

    digits = make_cluttered_digits(3, split="test", seed=2).images
    images = []
    for i, image in enumerate(digits):
        images.append(tmp_path / f"digit{i}.npy")
        np.save(images[-1], image.numpy())
    common = [*map(str, images), "--steps", "2", "--seed", "1"]
    done = _torchrun(["attribute", *common, "--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["attribute", *common, "--out", str(tmp_path / "one")]) == 0
    one, two = (
        sorted(p.name for p in (tmp_path / "one").iterdir()),
        sorted(p.name for p in (tmp_path / "two").iterdir()),
    )
    assert one == two and len(one) == 6  # a map and an overlay per image, written once (by rank 0)
    for i in range(3):
        np.testing.assert_allclose(np.load(tmp_path / "two" / f"digit{i}.npy"),
                                   np.load(tmp_path / "one" / f"digit{i}.npy"), rtol=1e-4, atol=1e-3)  # fmt: skip
    assert done.stdout.count("digit0.npy:") == 1  # one report, from rank 0


def test_torchrun_a_failing_rank_ends_the_run_without_outputs(tmp_path):
    from pyroflows.attribution import load_bundled_model
    from pyroflows.datasets import make_cluttered_digits

    (tmp_path / "failing_model.py").write_text(_FAILING_MODEL)
    sys.path.insert(0, str(tmp_path))
    try:
        import failing_model

        torch.save(failing_model.FailsOnRank1(load_bundled_model()), tmp_path / "model.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("failing_model", None)
    digits = make_cluttered_digits(24, split="train", seed=1).images
    np.save(tmp_path / "data.npy", digits.numpy())
    images = []
    for i in range(3):
        images.append(tmp_path / f"digit{i}.npy")
        np.save(images[-1], digits[i].numpy())
    args = ["attribute", *map(str, images), "--model", str(tmp_path / "model.pt"), "--layer", "inner.features.6",
            "--data", str(tmp_path / "data.npy"), "--steps", "2", "--out", str(tmp_path / "maps"),
            "--trust-model-file"]  # a pickle (its rank-dependent forward cannot be exported)  # fmt: skip
    done = _torchrun(args, tmp_path, extra_path=str(tmp_path))
    assert done.returncode != 0
    assert "pyroflows: error: rank 1 of 2 failed: RuntimeError: injected failure on rank 1" in done.stderr
    assert "injected failure on rank 1" in done.stderr
    assert not (tmp_path / "maps").exists()  # nothing written, not even the directory


@pytest.mark.slow  # the training itself is compared by default above; this adds the CLI's one write
def test_torchrun_flow_fit_saves_the_one_process_flow_once(tmp_path):
    from pyroflows.cli import main
    from pyroflows.serialization import load_checkpoint

    np.save(tmp_path / "beta.npy", np.random.default_rng(0).beta(2.0, 5.0, 300))
    common = ["flow", "fit", str(tmp_path / "beta.npy"), "--low", "0", "--high", "1", "--steps", "40", "--seed", "0",
              "--quiet"]  # fmt: skip
    done = _torchrun([*common, "--out", str(tmp_path / "two.pt")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved to") == 1  # rank 0 alone reports and writes
    assert main([*common, "--out", str(tmp_path / "one.pt")]) == 0
    one, two = (load_checkpoint(tmp_path / f"{name}.pt", kind="CompactFlow") for name in ("one", "two"))
    _close(two["state_dict"], one["state_dict"], rtol=1e-6, atol=1e-9)
    _close(two["extra"]["train_nll"], one["extra"]["train_nll"], rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_torchrun_evaluate_writes_the_one_process_table(tmp_path):
    import csv

    from pyroflows.cli import main

    common = ["evaluate", "--methods", "random,saliency,per-sample", "--n-images", "6", "--n-masks", "4",
              "--sensitivity-steps", "2", "--sanity-images", "2", "--estimation-images", "100",
              "--no-progress"]  # fmt: skip
    done = _torchrun([*common, "--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    tables = [list(csv.DictReader((tmp_path / d / "table.csv").read_text().splitlines())) for d in ("one", "two")]
    for one, two in zip(*tables, strict=True):
        for key, value in one.items():
            if key == "seconds_per_image":
                continue
            try:
                assert float(two[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-5), key
            except ValueError:
                assert two[key] == value
