"""Scale-out on ``torch.distributed``: wall time on 1 process against N processes, side by side in one run.

Usage: ``python benchmarks/scale_out.py [--quick] [--nproc N] [--repeats R] [--no-write]``
(or, on a cluster, ``torchrun --nnodes M --nproc-per-node G ... benchmarks/scale_out.py --in-group``).

Workloads, each timed from a barrier to the end of its last collective (process start and imports excluded):

* **attribution**: the per-sample bottleneck at the paper's settings (10 Adam steps, 10 noise copies, beta 10) on
  64 held-out bundled digits, statistics from the shipped readout (as ``pyroflows attribute`` does): sharded over
  the processes and gathered back in order on every rank;
* **estimate**: the layer's statistics over 2,000 training digits (sharded, moments all-reduced);
* **readout training**: ``ReadoutBottleneck.fit`` for a fixed number of steps on global batches of 64 digits, each
  process taking its slice of every batch, gradients summed across processes.

Every process runs with 1 torch thread (``torch.set_num_threads(1)``), so N processes use N cores. Both sides run
in freshly spawned processes in the same script run, alternating, ``--repeats`` times; the machine's load
(``os.getloadavg``) is printed beside each figure, since a shared machine makes single figures noisy. With
``--in-group`` the script joins the process group ``torchrun`` set up and times only that configuration (the way
to measure more processes or nodes; ``--nproc`` then does nothing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_section as _write_section  # noqa: E402

SECTION = "## Scale-out on torch.distributed"


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"images": 8, "steps": 2, "estimate": 200, "fit_steps": 2, "fit_batch": 16}
    return {"images": 64, "steps": 10, "estimate": 2000, "fit_steps": 20, "fit_batch": 64}


def workloads(sizes: dict[str, int]) -> dict[str, object]:
    """Run the three workloads in the current process group (or alone); seconds and results of each."""
    import pyro

    from pyroflows import distributed
    from pyroflows.attribution import PerSampleBottleneck, ReadoutBottleneck
    from pyroflows.datasets import make_cluttered_digits
    from pyroflows.zoo import BUNDLED_LAYER, load_bundled_model, load_bundled_readout

    model = load_bundled_model()
    test = make_cluttered_digits(sizes["images"], split="test", seed=0)
    train = make_cluttered_digits(max(sizes["estimate"], sizes["fit_steps"] * sizes["fit_batch"]), split="train",
                                  seed=1)  # fmt: skip
    shipped = load_bundled_readout(model)
    out: dict[str, object] = {}

    def timed(name: str, fn):  # noqa: ANN001, ANN202
        distributed.barrier()
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpu = time.process_time() - cpu
        distributed.barrier()
        out[name] = time.perf_counter() - start
        # CPU seconds of the busiest process: the wall time on an otherwise idle machine, whatever else competes.
        out[f"{name} cpu"] = max(float(c) for c in _gather(cpu))
        return result

    pyro.set_rng_seed(0)
    bottleneck = PerSampleBottleneck(model, BUNDLED_LAYER, steps=sizes["steps"])
    bottleneck.set_statistics(shipped.mean, shipped.std, shipped.active, shipped.n_samples)
    bottleneck.attribute(test.images[:2], test.labels[:2])  # warm-up, untimed: first-call costs of each process
    pyro.set_rng_seed(0)
    out["maps"] = timed("attribution", lambda: bottleneck.attribute(test.images, test.labels).detach())
    estimator = PerSampleBottleneck(model, BUNDLED_LAYER)
    timed("estimate", lambda: estimator.estimate(train.images[: sizes["estimate"]]))
    out["std"] = estimator.std
    readout = ReadoutBottleneck(model, BUNDLED_LAYER, readout_layers=["features.3", BUNDLED_LAYER])
    readout.estimate(train.images[:500])
    batch = sizes["fit_batch"]
    batches = [(train.images[i * batch : (i + 1) * batch], train.labels[i * batch : (i + 1) * batch])
               for i in range(sizes["fit_steps"])]  # fmt: skip
    pyro.set_rng_seed(1)
    out["history"] = timed("readout training", lambda: list(readout.fit(batches, epochs=1, lr=1e-3)))
    return out


def _gather(value: float) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    values: list[float] = [0.0] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def _worker(rank: int, world: int, port: int, sizes: dict[str, int], path: str) -> None:
    torch.set_num_threads(1)
    import torch.distributed as dist

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = workloads(sizes)
        if rank == 0:
            torch.save(result, path)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_spawned(world: int, sizes: dict[str, int], path: Path) -> dict[str, object]:
    """The workloads in ``world`` fresh processes of 1 thread each; rank 0's results."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world, _free_port(), sizes, str(path)), nprocs=world, join=True)
    return torch.load(path, weights_only=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 digits, 2 steps, 2 training steps, one repeat")
    parser.add_argument("--nproc", type=int, default=2, help="processes of the distributed side (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating 1-process / N-process runs (default 3)")
    parser.add_argument("--in-group", action="store_true", help="time only the torchrun group this runs in")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    sizes = _sizes(args.quick)

    if args.in_group:
        from pyroflows import distributed

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        with distributed.launched():
            result = workloads(sizes)
            if distributed.is_main():
                names = ("attribution", "estimate", "readout training")
                print(f"{distributed.world_size()} process(es): " + ", ".join(f"{k} {result[k]:.2f} s" for k in names))
        return 0

    import tempfile

    repeats = 1 if args.quick else args.repeats
    start = time.perf_counter()
    runs: dict[int, list[dict[str, object]]] = {1: [], args.nproc: []}
    loads: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for world in (1, args.nproc):
                loads.append(os.getloadavg()[0])
                runs[world].append(run_spawned(world, sizes, Path(tmp) / f"r{r}_w{world}.pt"))
                print(f"repeat {r + 1}: {world} process(es): " + ", ".join(
                    f"{k} {runs[world][-1][k]:.2f} s" for k in ("attribution", "estimate", "readout training")
                ) + f" (load {loads[-1]:.2f})", flush=True)  # fmt: skip
    total = time.perf_counter() - start
    one, many = runs[1], runs[args.nproc]
    # The split runs the same computation: the maps, statistics and losses agree up to float rounding.
    maps_diff = max(float((a["maps"] - b["maps"]).abs().max()) for a, b in zip(one, many, strict=True))
    std_diff = max(float((a["std"] - b["std"]).abs().max()) for a, b in zip(one, many, strict=True))
    loss_diff = max(abs(x - y) for a, b in zip(one, many, strict=True) for x, y in zip(a["history"], b["history"],
                                                                                       strict=True))  # fmt: skip

    def cell(results: list[dict[str, object]], key: str) -> str:
        values = [float(r[key]) for r in results]
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    lines = [
        f"| workload | 1 process, s (median, range) | {args.nproc} processes, s (median, range) | speed-up (median of "
        f"per-repeat ratios, range) | CPU s, 1 process | CPU s, busiest of {args.nproc} | CPU-time speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in [
        ("attribution", f"per-sample attribution, {sizes['images']} digits, {sizes['steps']} steps"),
        ("estimate", f"estimate over {sizes['estimate']} digits"),
        ("readout training", f"readout training, {sizes['fit_steps']} steps of {sizes['fit_batch']} digits"),
    ]:
        ratios = [float(a[key]) / float(b[key]) for a, b in zip(one, many, strict=True)]
        cpu_ratios = [float(a[f"{key} cpu"]) / float(b[f"{key} cpu"]) for a, b in zip(one, many, strict=True)]
        lines.append(f"| {label} | {cell(one, key)} | {cell(many, key)} | {statistics.median(ratios):.2f}x "
                     f"({min(ratios):.2f}-{max(ratios):.2f}) | {cell(one, key + ' cpu')} | "
                     f"{cell(many, key + ' cpu')} | {statistics.median(cpu_ratios):.2f}x "
                     f"({min(cpu_ratios):.2f}-{max(cpu_ratios):.2f}) |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    agreement = (f"largest difference between the 1- and {args.nproc}-process results: maps {maps_diff:.2g} bits, "
                 f"std {std_diff:.2g}, training loss {loss_diff:.2g}")  # fmt: skip
    print(agreement)
    print(f"load average (1 min) at the start of each run: {', '.join(f'{x:.2f}' for x in loads)}")
    if not args.no_write and not args.quick:
        section = (
            f"{SECTION}\n\n"
            f"Command: `python benchmarks/scale_out.py --nproc {args.nproc} --repeats {repeats}` (date "
            f"{datetime.date.today()}, {total:.0f} s, {os.cpu_count()} cores). 1 process against {args.nproc} gloo "
            "processes, each with 1 torch thread, spawned alternately in one run; each figure is the workload's "
            "wall time between two barriers (process start and imports excluded). The bottleneck at the paper's "
            "settings with the shipped statistics; readout training at lr 1e-3 on the bundled CNN. "
            f"Load average (1 min) at the start of each run: {', '.join(f'{x:.2f}' for x in loads)} (the machine "
            "was shared with other jobs: the figures are noisy, and a load above the core count means the "
            "processes competed with others for the cores). The CPU columns give each workload's CPU seconds "
            "(`time.process_time`) in the one process and in the busiest of the N: on a machine with a free core "
            "per process this ratio is the wall-time speed-up, whatever else shares the machine now.\n\n"
            + table
            + f"\n\n{agreement[0].upper() + agreement[1:]}.\n\n"
            "Reading the figures: each process attributes half of the images, so the CPU seconds of the busiest "
            "process are about half of the one process's; the wall-time speed-up reaches that ratio only with a "
            "free core per process. On a machine whose load is several times its core count the scheduler shares "
            "the cores among every job, so the wall-time ratio is low and varies from repeat to repeat, and CPU "
            "time itself varies with the cache and context-switch pressure (ratios above 2x). Process start and "
            "imports (seconds per process) are not in the figures: they matter for small jobs, not for a "
            "validation set. GPUs: unmeasured (none was available).\n"
        )
        _write_section(section, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
