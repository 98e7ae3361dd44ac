"""Property suite: every CLI command, driven with generated bad input, fails cleanly and touches nothing.

For each command a case starts from a valid command line on tiny data and spoils one thing, drawn by hypothesis:
an input file (missing, a folder, corrupt bytes, NaN, wrong shape, complex, a bad CSV, a model of another kind or
with a corrupt config), a number (NaN, infinities, out of range, not a number, huge), an output path (an existing
file without ``--force``, a path under a file, a read-only folder, a folder where a file is expected, a wrong
suffix) or an option (unknown, missing, an invalid choice). Each case asserts: exit status 2, exactly one error
line on stderr (``pyroflows: error: ...``), no traceback, no new file or folder, and every file that was there
before byte-identical. ``pyroflows.cli.main`` runs in-process.

The choices come from the registries (``FAMILIES``, ``SCHEDULES``, ``NETWORKS``, ``SAMPLERS``, ``METHODS``,
``IMPUTATION_METHODS``, and the library's ``LOSSES`` and ``PARAMETERIZATIONS``): a case's valid command line takes a
registered member drawn by hypothesis, every such command line is checked to run, and an invalid choice is anything
not registered.

The number of cases per command comes from the ``pyroflows-cli`` hypothesis profile (tests/conftest.py): a few
per command in the default run, many more with ``--runslow``.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyroflows.cli import main
from pyroflows.diffusion import NETWORKS, SCHEDULES
from pyroflows.diffusion.ddpm import PARAMETERIZATIONS
from pyroflows.diffusion.imputation import IMPUTATION_METHODS
from pyroflows.diffusion.samplers import SAMPLERS
from pyroflows.diffusion.training import LOSSES
from pyroflows.evaluation import METHODS
from pyroflows.flows.families import FAMILIES, SPLINE_ENDS

CLI = settings(settings.get_profile("pyroflows-cli"))
CASES: collections.Counter[str] = collections.Counter()  # generated cases per command (printed at the end)

# --------------------------------------------------------------------------------------------------------------
# Bad values
NOT_A_NUMBER = st.sampled_from(["nan", "NaN", "inf", "-inf", "x", "", "1,2", "0x10", "1e400", "-1e400", "none"])


def bad_int(low: int, high: int) -> st.SearchStrategy[str]:
    """Strings that are not integers in ``[low, high]``."""
    return st.one_of(
        NOT_A_NUMBER,
        st.integers(min_value=low - 10**6, max_value=low - 1).map(str),
        st.integers(min_value=high + 1, max_value=high + 10**30).map(str),
        st.floats(min_value=-1e6, max_value=1e6).filter(lambda v: not v.is_integer()).map(repr),
        st.just(f"{float(high) * 10:.0e}"),  # 1e10-style, above the range
    )


def bad_float(low: float, *, open_low: bool = False) -> st.SearchStrategy[str]:
    """Strings that are not finite numbers ``>= low`` (``> low`` with ``open_low``)."""
    below = st.floats(max_value=low, exclude_max=not open_low, allow_nan=False, allow_infinity=False)
    return st.one_of(NOT_A_NUMBER, below.map(repr))


SEED = bad_int(0, 2**32 - 1)


def _bad_option(option: str, values: st.SearchStrategy[str]) -> Callable:
    def fault(draw, work: Path, argv: list[str]) -> list[str]:
        return _set(argv, option, draw(values))

    fault.__name__ = f"number {option}"
    return fault


def _set(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    # "--opt=value" keeps values such as "--" or "-x" from being read as options; argparse takes both forms.
    i = argv.index(option)
    return [*argv[:i], f"{option}={argv[i + 1]}", *argv[i + 2 :]]


# --------------------------------------------------------------------------------------------------------------
# Bad files: each writes a file (or nothing) at ``path`` inside the case's folder and returns it.
def _corrupt(path: Path) -> Path:
    path.write_bytes(b"\x93NUMPY\x01\x00garbage" + bytes(range(40)))
    return path


def _array(values: np.ndarray) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        np.save(path.with_suffix(".npy"), values)
        return path.with_suffix(".npy")

    return make


def _text(content: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.with_suffix(".csv").write_text(content)
        return path.with_suffix(".csv")

    return make


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


DATA_FILES = {
    "missing": lambda path: path.with_name("missing.npy"),
    "a folder": _folder,
    "corrupt": _corrupt,
    "NaN": _array(np.array([0.5, np.nan, 0.2] * 5)),
    "inf": _array(np.array([[0.5, 0.1], [np.inf, 0.2]] * 6)),
    "3-D": _array(np.zeros((4, 3, 2))),
    "complex": _array(np.array([0.2 + 1j, 0.3] * 8)),
    "strings": _array(np.array(["a", "b"])),
    "empty csv": _text(""),
    "bad csv row": _text("0.1\n0.2\n0.3x\n"),
    "corrupt first row": _text("1.5x\n0.2\n0.3\n"),
    "ragged csv": _text("0.1,0.2\n0.3\n"),
    "header only": _text("x,y\n"),
    "wrong suffix": lambda path: (path.with_suffix(".txt").write_text("0.1\n"), path.with_suffix(".txt"))[1],
}


def _checkpoint(assets: Path, name: str, change: Callable[[dict], None]) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        checkpoint = torch.load(assets / name, weights_only=True)
        change(checkpoint)
        torch.save(checkpoint, path.with_suffix(".pt"))
        return path.with_suffix(".pt")

    return make


def _nan_weights(checkpoint: dict) -> None:
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    checkpoint["state_dict"][key] = torch.full_like(checkpoint["state_dict"][key], float("nan"))


def model_files(assets: Path, own: str, other: str) -> dict[str, Callable[[Path], Path]]:
    """Broken versions of the model file ``own`` (``other``: a model of another kind)."""

    def truncated(path: Path) -> Path:
        path.with_suffix(".pt").write_bytes((assets / own).read_bytes()[:300])
        return path.with_suffix(".pt")

    return {
        "missing": lambda path: path.with_name("missing.pt"),
        "a folder": _folder,
        "corrupt": _corrupt,
        "truncated": truncated,
        "another kind": lambda path: assets / other,
        "foreign dict": lambda path: (torch.save({"weights": torch.ones(2)}, path), path)[1],
        "config not a dict": _checkpoint(assets, own, lambda c: c.update(config=[1, 2])),
        "huge size": _checkpoint(assets, own, lambda c: c["config"].update(num_layers=10**9, steps=10**9)),
        "bad setting": _checkpoint(assets, own, lambda c: c["config"].update(transform="nope", schedule="nope")),
        "wrong weights": _checkpoint(assets, own, lambda c: c["state_dict"].update(extra_weight=torch.ones(3))),
        "NaN weights": _checkpoint(assets, own, _nan_weights),
    }


def _file_fault(option: str | int, files: Callable[[Path], dict] | dict) -> Callable:
    """Replace the file in ``option`` (an option name, or a position in argv) by a broken one."""

    def fault(draw, work: Path, argv: list[str]) -> list[str]:
        table = files(work) if callable(files) else files
        kind = draw(st.sampled_from(sorted(table)))
        path = table[kind](work / "in" / f"bad_{kind.replace(' ', '_')}")
        argv = list(argv)
        argv[argv.index(option) + 1 if isinstance(option, str) else option] = str(path)
        return argv

    fault.__name__ = f"file {option}"
    return fault


# --------------------------------------------------------------------------------------------------------------
# Bad output paths
def _output_fault(option: str, suffix: str, *, folder: bool = False, existing: str = "") -> Callable:
    """``option`` names an output file with ``suffix`` (or a folder, holding ``existing`` from an earlier run)."""

    def fault(draw, work: Path, argv: list[str]) -> list[str] | tuple[list[str], Callable]:
        kind = draw(st.sampled_from(["exists", "under a file", "read-only", "wrong type"]))
        argv = list(argv)
        i = argv.index(option) + 1
        if kind == "exists":  # an earlier result, without --force
            if folder:
                target = work / "earlier"
                target.mkdir()
                (target / existing).parent.mkdir(parents=True, exist_ok=True)
                (target / existing).write_bytes(b"an earlier result")
            else:
                target = work / f"earlier{suffix}"
                target.write_bytes(b"an earlier result")
            argv[i] = str(target)
        elif kind == "under a file":
            argv[i] = str(work / "a_file.txt" / draw(st.sampled_from(["x", "deep/er"])) / f"out{suffix}")
        elif kind == "read-only":
            locked = work / "locked"
            locked.mkdir()
            argv[i] = str(locked / ("out" if folder else f"out{suffix}"))
            real = os.access  # root writes anywhere: answer as the file system would for another user

            return argv, lambda: mock.patch.object(
                os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode)
            )
        else:  # a file where a folder is expected, or a folder where a file is expected
            argv[i] = str(work / "a_file.txt") if folder else str(work / "in")
            if not folder and draw(st.booleans()) and suffix in (".npy", ".csv"):
                argv[i] = str(work / "out.txt")  # an output type that is not written
        return argv

    fault.__name__ = f"output {option}"
    return fault


# --------------------------------------------------------------------------------------------------------------
# Bad options
def _option_fault(required: tuple[str, ...], choices: dict[str, tuple[str, ...]]) -> Callable:
    def fault(draw, work: Path, argv: list[str]) -> list[str]:
        kinds = ["unknown"] + (["missing"] if required else []) + (["choice"] if choices else [])
        kind = draw(st.sampled_from(kinds))
        argv = list(argv)
        if kind == "unknown":
            argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["--bogus", "--frobnicate=3", "-z"])))
        elif kind == "missing":
            option = draw(st.sampled_from(required))
            i = argv.index(option)
            del argv[i : i + 2]
        else:
            option = draw(st.sampled_from(sorted(choices)))
            value = draw(st.text("abcxyz-", min_size=1, max_size=8).filter(lambda v: v not in choices[option]))
            argv = _set(argv, option, value)
        return argv

    fault.__name__ = "option"
    return fault


# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """Tiny inputs and models, made once: a flow, a DDPM, data for both, a digit, a whole-model pickle."""
    from pyroflows.datasets import make_cluttered_digits

    root = tmp_path_factory.mktemp("assets")
    rng = np.random.default_rng(0)
    np.save(root / "flow_data.npy", rng.uniform(0.1, 0.9, 40))
    np.save(root / "table.npy", rng.normal(size=(40, 2)))
    np.save(root / "digit.npy", make_cluttered_digits(1, split="test", seed=0).images[0, 0].numpy())
    np.save(root / "digits.npy", make_cluttered_digits(8, split="train", seed=1).images.numpy())
    torch.save(torch.nn.Linear(2, 2), root / "pickled.pt")
    holes = rng.normal(size=(8, 2)).round(3)
    (root / "holes.csv").write_text("".join(f"{a},\n" if i % 3 == 0 else f",{b}\n" if i % 3 == 1 else f"{a},{b}\n"
                                            for i, (a, b) in enumerate(holes)))  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["flow", "fit", str(root / "flow_data.npy"), "--low", "0", "--high", "1", "--out",
                     str(root / "flow.pt"), "--layers", "1", "--steps", "1", "--quiet"]) == 0  # fmt: skip
        assert main(["diffusion", "train", str(root / "table.npy"), "--out", str(root / "ddpm.pt"), "--epochs", "1",
                     "--steps", "3", "--quiet"]) == 0  # fmt: skip
    return root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _workspace(assets: Path) -> Path:
    """A fresh folder holding a copy of the assets in ``in/`` and a user's file ``a_file.txt``."""
    work = Path(tempfile.mkdtemp(prefix="pyroflows-case-"))
    (work / "in").mkdir()
    for file in assets.iterdir():
        shutil.copy(file, work / "in" / file.name)
    (work / "a_file.txt").write_text("a user's file")
    return work


def _check_case(
    name: str,
    assets: Path,
    data: st.DataObject,
    base: Callable[[Path], list[str]],
    faults: list,
    choices: dict[str, tuple[str, ...]] | None = None,
) -> None:
    """One generated case: the valid command ``base``, with one option set to a registered member drawn from
    ``choices`` (each such command line runs: :func:`test_every_registered_choice_runs`), spoiled by one fault."""
    CASES[name] += 1
    work = _workspace(assets)
    try:
        argv = base(work)
        if choices:
            option = data.draw(st.sampled_from(sorted(choices)), label="registered option")
            argv = _set(argv, option, data.draw(st.sampled_from(choices[option]), label=option))
        fault = data.draw(st.sampled_from(faults), label="fault")
        made = fault(data.draw, work, argv)
        argv, patch = made if isinstance(made, tuple) else (made, contextlib.nullcontext)
        data.draw(st.just(argv), label="argv")  # shown when a case fails
        before = _snapshot(work)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), patch():
            status = main(argv)
        lines = [line for line in err.getvalue().splitlines() if not line.startswith("pyroflows: warning: ")]
        assert status == 2, f"exit status {status} for {argv}: {err.getvalue()[-500:]}"
        assert len(lines) == 1 and lines[0].startswith("pyroflows: error: "), err.getvalue()[-2000:]
        assert "Traceback" not in err.getvalue() and len(lines[0]) > len("pyroflows: error: ") + 10
        after = _snapshot(work)
        assert sorted(after) == sorted(before), f"files added or removed: {set(after) ^ set(before)}"
        changed = [k for k in before if before[k] != after[k]]
        assert not changed, f"files changed: {changed}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _flow_fit(work: Path) -> list[str]:
    return ["flow", "fit", str(work / "in" / "flow_data.npy"), "--low", "0", "--high", "1", "--out",
            str(work / "new" / "flow.pt"), "--layers", "1", "--steps", "1", "--quiet"]  # fmt: skip


def _bounds_fault(draw, work: Path, argv: list[str]) -> list[str]:
    low, high = draw(
        st.sampled_from(
            [
                ("nan", "1"),
                ("0", "inf"),
                ("x", "1"),
                ("1", "0"),
                ("0.5", "0.5"),
                ("0,0", "1"),
                ("-1e308", "1e308"),
                ("0", ""),
                ("0.2", "1"),
            ]
        )
    )  # the last: points below the bound
    return _set(_set(argv, "--low", low), "--high", high)


# The registered choices of each command, read from the registries: a new member is drawn into the valid command
# lines of the cases below and excluded from the invalid choices.
FLOW_CHOICES = {"--transform": FAMILIES.names(), "--ends": SPLINE_ENDS.names()}
# The flow fit cases run on one column: the families that take one (a family needing more is a fault of its own).
FLOW_1D = {"--transform": tuple(n for n in FAMILIES.names() if FAMILIES.get(n).factory.min_dim <= 1),
           "--ends": SPLINE_ENDS.names()}  # fmt: skip
FLOW_WIDE = tuple(n for n in FAMILIES.names() if FAMILIES.get(n).factory.min_dim > 1)
# Families whose layers have only Pyro's fixed spline ends: any other --ends with them is a fault.
FLOW_FIXED_ENDS = tuple(n for n in FLOW_1D["--transform"] if FAMILIES.get(n).factory.default_ends == "fixed")


def _wide_family_fault(draw, work: Path, argv: list[str]) -> list[str]:
    """A family that needs more columns than the data have."""
    return _set(argv, "--transform", draw(st.sampled_from(FLOW_WIDE)))


def _ends_fault(draw, work: Path, argv: list[str]) -> list[str]:
    """Spline ends for a family without them."""
    argv = _set(argv, "--transform", draw(st.sampled_from(FLOW_FIXED_ENDS)))
    return _set(argv, "--ends", draw(st.sampled_from([n for n in SPLINE_ENDS.names() if n != "fixed"])))


@CLI
@given(data=st.data())
def test_flow_fit(assets, data):
    faults = [
        _file_fault(2, DATA_FILES),
        _bounds_fault,
        *([_wide_family_fault] if FLOW_WIDE else []),
        *([_ends_fault] if FLOW_FIXED_ENDS else []),
        _bad_option("--layers", bad_int(0, 1000)),
        _bad_option("--steps", bad_int(1, 10**7)),
        _bad_option("--seed", SEED),
        _output_fault("--out", ".pt"),
        _option_fault(("--out", "--low", "--high"), FLOW_CHOICES),
    ]
    _check_case("flow fit", assets, data, _flow_fit, faults, FLOW_1D)


@CLI
@given(data=st.data())
def test_flow_score(assets, data):
    def base(work):
        return ["flow", "score", str(work / "in" / "flow.pt"), str(work / "in" / "flow_data.npy"), "--json"]

    outside = {"outside the support": _array(np.array([0.5, 1.5, -0.2])), "2 columns": _array(np.ones((5, 2)))}
    faults = [
        _file_fault(2, lambda work: model_files(work / "in", "flow.pt", "ddpm.pt")),
        _file_fault(3, {**DATA_FILES, **outside}),
        _option_fault((), {}),
    ]
    _check_case("flow score", assets, data, base, faults)


@CLI
@given(data=st.data())
def test_flow_sample(assets, data):
    def base(work):
        return ["flow", "sample", str(work / "in" / "flow.pt"), "-n", "5", "--out", str(work / "new" / "s.npy")]

    faults = [
        _file_fault(2, lambda work: model_files(work / "in", "flow.pt", "ddpm.pt")),
        _bad_option("-n", bad_int(1, 10**8)),
        _bad_option("--seed", SEED),
        _output_fault("--out", ".npy"),
        _option_fault(("-n", "--out"), {}),
    ]
    _check_case("flow sample", assets, data, base, faults)


DIFFUSION_CHOICES = {"--schedule": SCHEDULES.names(), "--loss": LOSSES, "--network": NETWORKS.names(),
                     "--parameterization": PARAMETERIZATIONS}  # fmt: skip
SAMPLE_CHOICES = {"--sampler": SAMPLERS.names()}
ATTRIBUTE_CHOICES = {"--method": ("per-sample", "readout")}  # the command's own two (no registry)


def _diffusion_train(work: Path) -> list[str]:
    return ["diffusion", "train", str(work / "in" / "table.npy"), "--out", str(work / "new" / "m.pt"), "--epochs",
            "1", "--steps", "3", "--quiet"]  # fmt: skip


def _diffusion_sample(work: Path) -> list[str]:
    return ["diffusion", "sample", str(work / "in" / "ddpm.pt"), "-n", "5", "--out", str(work / "new" / "s.csv")]


def _attribute(work: Path) -> list[str]:
    return ["attribute", str(work / "in" / "digit.npy"), "--out", str(work / "maps"), "--steps", "1"]


@CLI
@given(data=st.data())
def test_diffusion_train(assets, data):
    def dataset(draw, work, argv):
        argv = ["diffusion", "train", "--dataset", "moons", *argv[3:]]
        return _set(argv, "--n-points", draw(bad_int(2, 10**8)))

    def both(draw, work, argv):
        return [*argv, "--dataset", "moons"]

    constant = {"constant column": _array(np.c_[np.arange(10.0), np.ones(10)]), "1-D": _array(np.arange(10.0))}
    faults = [
        _file_fault(2, {**DATA_FILES, **constant}),
        dataset,
        both,
        _bad_option("--steps", bad_int(1, 100_000)),
        _bad_option("--epochs", bad_int(1, 10**8)),
        _bad_option("--lr", bad_float(0.0, open_low=True)),
        _bad_option("--batch-size", bad_int(1, 10**8)),
        _bad_option("--seed", SEED),
        _output_fault("--out", ".pt"),
        _option_fault(("--out",), DIFFUSION_CHOICES),
    ]
    _check_case("diffusion train", assets, data, _diffusion_train, faults, DIFFUSION_CHOICES)


@CLI
@given(data=st.data())
def test_diffusion_sample(assets, data):
    def too_many_steps(draw, work, argv):
        return [*argv, "--sampler", "ddim", "--sampling-steps", str(draw(st.integers(4, 10**5)))]

    faults = [
        _file_fault(2, lambda work: model_files(work / "in", "ddpm.pt", "flow.pt")),
        _bad_option("-n", bad_int(1, 10**8)),
        _bad_option("--sampling-steps", bad_int(1, 100_000)),
        too_many_steps,
        _bad_option("--seed", SEED),
        _output_fault("--out", ".csv"),
        _option_fault(("-n", "--out"), SAMPLE_CHOICES),
    ]
    _check_case("diffusion sample", assets, data, _diffusion_sample, faults, SAMPLE_CHOICES)


@CLI
@given(data=st.data())
def test_diffusion_nll(assets, data):
    def base(work):
        return ["diffusion", "nll", str(work / "in" / "ddpm.pt"), str(work / "in" / "table.npy"), "--json",
                "--particles", "1"]  # fmt: skip

    faults = [
        _file_fault(2, lambda work: model_files(work / "in", "ddpm.pt", "flow.pt")),
        _file_fault(3, {**DATA_FILES, "3 columns": _array(np.ones((5, 3))), "1-D": _array(np.arange(5.0))}),
        _bad_option("--particles", bad_int(1, 100_000)),
        _bad_option("--seed", SEED),
        _option_fault((), {}),
    ]
    _check_case("diffusion nll", assets, data, base, faults)


IMPUTE_CHOICES = {"--method": IMPUTATION_METHODS.names()}


def _diffusion_impute(work: Path) -> list[str]:
    return ["diffusion", "impute", str(work / "in" / "ddpm.pt"), str(work / "in" / "holes.csv"), "--out",
            str(work / "new" / "filled.csv"), "--particles", "4"]  # fmt: skip


@CLI
@given(data=st.data())
def test_diffusion_impute(assets, data):
    def labels_for_an_unlabelled_model(draw, work, argv):
        np.save(work / "in" / "labels.npy", np.zeros(8, dtype=np.int64))
        return [*argv, "--labels", str(work / "in" / "labels.npy")]

    def guidance_without_labels(draw, work, argv):
        return _set(argv, "--guidance", draw(st.sampled_from(["0.5", "1", "3"])))

    faults = [
        _file_fault(2, lambda work: model_files(work / "in", "ddpm.pt", "flow.pt")),
        _file_fault(3, {**DATA_FILES, "3 columns": _array(np.ones((5, 3))), "1-D": _array(np.arange(5.0))}),
        labels_for_an_unlabelled_model,
        guidance_without_labels,
        _bad_option("--particles", bad_int(1, 10**6)),
        _bad_option("--imputations", bad_int(1, 10**8)),
        _bad_option("--guidance", bad_float(0.0)),
        _bad_option("--seed", SEED),
        _output_fault("--out", ".csv"),
        _option_fault(("--out",), IMPUTE_CHOICES),
    ]
    _check_case("diffusion impute", assets, data, _diffusion_impute, faults, IMPUTE_CHOICES)


def _user_models(work: Path) -> dict:
    return {
        "missing": lambda path: path.with_name("missing.pt"),
        "corrupt": _corrupt,
        "a pickle without --trust-model-file": lambda path: work / "in" / "pickled.pt",
        "a pyroflows checkpoint": lambda path: work / "in" / "flow.pt",
        "a folder": _folder,
        "a corrupt .pt2": lambda path: _corrupt(path.with_suffix(".pt2")),
    }


@CLI
@given(data=st.data())
def test_attribute(assets, data):
    images = {
        "missing": lambda path: path.with_name("missing.npy"),
        "corrupt": _corrupt,
        "NaN": _array(np.full((56, 56), np.nan, np.float32)),
        "wrong size": _array(np.zeros((28, 28), np.float32)),
        "4-D": _array(np.zeros((1, 1, 56, 56), np.float32)),
        "complex": _array(np.zeros((56, 56), np.complex64)),
        "wrong suffix": lambda path: (path.with_suffix(".gif").write_bytes(b"GIF89a"), path.with_suffix(".gif"))[1],
    }
    inputs = {
        **{k: v for k, v in images.items() if k != "4-D"},  # [1, 1, 56, 56] is a valid --data
        "wrong shape": _array(np.zeros((5, 3), np.float32)),
        "1-D": _array(np.zeros(5, np.float32)),
        "inf": _array(np.full((2, 1, 56, 56), np.inf, np.float32)),
    }

    def with_data(draw, work, argv):
        return _file_fault("--data", inputs)(draw, work, [*argv, "--data", str(work / "in" / "digits.npy")])

    def user_model(draw, work, argv):
        argv = [*argv, "--model", "x", "--layer", "0", "--data", str(work / "in" / "digits.npy")]
        return _file_fault("--model", _user_models(work))(draw, work, argv)

    def readout_target(draw, work, argv):
        return [*argv, "--method", "readout", "--target", str(draw(st.integers(0, 9)))]

    def target_out_of_range(draw, work, argv):
        return [*argv, "--target", str(draw(st.integers(10, 10**9)))]

    def same_name(draw, work, argv):
        (work / "in" / "sub").mkdir()
        shutil.copy(work / "in" / "digit.npy", work / "in" / "sub" / "digit.npy")
        return [*argv, str(work / "in" / "sub" / "digit.npy")]

    faults = [
        _file_fault(1, images),
        with_data,
        user_model,
        readout_target,
        target_out_of_range,
        same_name,
        _bad_option("--beta", bad_float(0.0)),
        _bad_option("--steps", bad_int(1, 100_000)),
        _bad_option("--target", bad_int(0, 10**9)),
        _bad_option("--seed", SEED),
        _output_fault("--out", "", folder=True, existing="digit.npy"),
        _option_fault(("--out",), ATTRIBUTE_CHOICES),
    ]
    _check_case("attribute", assets, data, _attribute, faults)


@CLI
@given(data=st.data())
def test_evaluate(assets, data):
    def base(work):
        return ["evaluate", "--methods", "random", "--n-images", "2", "--n-masks", "3", "--sensitivity-steps", "1",
                "--sanity-images", "1", "--estimation-images", "10", "--no-progress",
                "--out", str(work / "ev")]  # fmt: skip

    def methods(draw, work, argv):
        registered = st.sampled_from(METHODS.names())
        value = st.one_of(
            st.sampled_from(["", ",", " , ", "nope", "random,nope", "Saliency"]),
            registered.map(lambda m: f"{m},nope"),  # a registered name beside an unknown one
            registered.map(str.upper),  # names are case-sensitive
            registered.map(lambda m: m.replace("-", "_")).filter(lambda m: m not in METHODS),
        )
        return _set(argv, "--methods", draw(value))

    def layer(draw, work, argv):
        name = draw(st.sampled_from(["nope", "features.99", "", "features..1"]))
        return _set(_set(argv, "--methods", "per-sample"), "--layer", name)

    def user_model(draw, work, argv):
        return _file_fault("--model", _user_models(work))(draw, work, [*argv, "--model", "x"])

    faults = [
        methods,
        layer,
        user_model,
        *[
            _bad_option(option, bad_int(low, 100_000))
            for option, low in [
                ("--n-images", 1),
                ("--n-masks", 3),
                ("--sensitivity-steps", 1),
                ("--sanity-images", 1),
                ("--estimation-images", 1),
            ]
        ],
        _bad_option("--seed", SEED),
        _output_fault("--out", "", folder=True, existing="table.md"),
        _option_fault(("--out",), {}),
    ]
    _check_case("evaluate", assets, data, base, faults)


@CLI
@given(data=st.data())
def test_demo(assets, data):
    def base(work):
        return ["demo", "--fast", "--out", str(work / "demo")]

    faults = [
        _bad_option("--seed", SEED),
        _output_fault("--out", "", folder=True, existing="evaluate/table.md"),  # an earlier demo's table
        _option_fault((), {}),
    ]
    _check_case("demo", assets, data, base, faults)


# Every command line a case starts from, with each registered member the cases draw, runs (status 0): a fault that
# fails is then the fault's doing, not a member that cannot run on the tiny data.
DRAWN = {"flow fit": (_flow_fit, FLOW_1D), "diffusion train": (_diffusion_train, DIFFUSION_CHOICES),
         "diffusion sample": (_diffusion_sample, SAMPLE_CHOICES),
         "diffusion impute": (_diffusion_impute, IMPUTE_CHOICES)}  # fmt: skip


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        (command, option, value)
        for command, (_, choices) in DRAWN.items()
        for option in choices
        for value in choices[option]
    ],
)
def test_every_registered_choice_runs(assets, command, option, value):
    base, _ = DRAWN[command]
    work = _workspace(assets)
    try:
        argv = _set(base(work), option, value)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            assert main(argv) == 0, err.getvalue()[-2000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
