"""Benchmark of conditioning a pyroflows DDPM: class labels with classifier-free guidance, and imputation.

Data: a 2-D and a 3-D Gaussian mixture whose class-conditionals and coordinate conditionals are known in closed
form, and two moons (labels: the upper or lower moon).

Three parts:
  * labels: a class-conditional DDPM (T = 10, the default label dropout) per mixture and seed; for each class and
    guidance w in {0, 1, 3}: the per-class accuracy (the fraction of a label's samples whose most probable mixture
    component, by the true mixture's posterior, is the label's own; the true class samples' own rate is the
    ceiling) and the energy distance (x1e-3, V-statistic) to exact draws of the class, beside the same statistic
    between two exact samples (the floor). Null-label samples against the whole mixture sit beside an
    unconditional DDPM trained on the same data.
  * impute: an unconditional DDPM per mixture and seed (T = 20 by default, --impute-steps; 4,000 training points and
    250 epochs by default, --impute-points, --impute-epochs); for several observed
    values (high- and low-density ones) M imputations of the missing coordinate(s) by ``replace`` and by ``smc``
    with each twist (forward, denoiser) and 8, 32 and 128 particles: the 1-Wasserstein distance to 20,000 exact
    draws of the closed-form conditional (the mean of the 1-D W1 over the imputed coordinates) and to the model's
    own conditional (a reference: every weighted particle of large denoiser-twist SMC runs, checked against
    forward-twist runs of the same size), with the time per imputed row; beside it, rejection sampling from the
    same model at the time SMC-128 with the default twist took (unconditional draws whose observed coordinates
    fall within +-h of the observed values). The W1 floor is the same statistic for M exact draws.
  * moons: the default DDPM (10,000 points, 5,000 optimizer steps) with and without labels, same data and seed:
    the ED ratio (energy distance over the noise floor) of the unconditional model and of the labelled model's
    null-label samples side by side, and the labelled model's per-moon accuracy at w in {0, 1, 3}.

Usage: python benchmarks/diffusion_conditional.py [--quick] [--no-write] [--part all|labels,impute,moons]
       [--seeds 0,1,2] [--impute-steps 20] [--impute-points 4000] [--impute-epochs 250] [--label-dropout R]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyro
import torch
from scipy.stats import ttest_rel, wasserstein_distance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import RESULTS, write_subsections  # noqa: E402  # benchmarks/ is sys.path[0] when run

from pyroflows.diffusion import (  # noqa: E402
    DDPM,
    TWISTS,
    TwistedSMC,
    ancestral_sample,
    energy_distance,
    energy_distance_ratio,
    impute,
    noise_floor,
)
from pyroflows.diffusion import train as train_ddpm  # noqa: E402
from pyroflows.diffusion.training import DEFAULT_LABEL_DROPOUT  # noqa: E402

HEADING = "## Diffusion: conditioning"


@dataclass
class Mixture:
    """A Gaussian mixture with its closed-form conditionals."""

    weights: np.ndarray
    means: np.ndarray
    covs: np.ndarray

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        x = np.empty((n, self.dim))
        for k in range(len(self.weights)):
            rows = labels == k
            x[rows] = rng.multivariate_normal(self.means[k], self.covs[k], size=int(rows.sum()))
        return x, labels

    def log_component_densities(self, x: np.ndarray, dims: list[int] | None = None) -> np.ndarray:
        dims = list(range(self.dim)) if dims is None else dims
        out = []
        for k in range(len(self.weights)):
            cov = self.covs[k][np.ix_(dims, dims)]
            diff = x[:, dims] - self.means[k][dims]
            solve = np.linalg.solve(cov, diff.T).T
            out.append(
                np.log(self.weights[k]) - 0.5 * (diff * solve).sum(1) - 0.5 * np.log(np.linalg.det(2 * np.pi * cov))
            )
        return np.stack(out, axis=1)

    def classify(self, x: np.ndarray) -> np.ndarray:
        """The most probable component of each point under the true mixture."""
        return self.log_component_densities(x).argmax(1)

    def conditional(self, observed: list[int], y: np.ndarray) -> Mixture:
        """The mixture of the other coordinates given ``x[observed] = y``."""
        u = [d for d in range(self.dim) if d not in observed]
        log_w = self.log_component_densities(_full(y, observed, self.dim), observed)[0]
        w = np.exp(log_w - log_w.max())
        means, covs = [], []
        for k in range(len(self.weights)):
            c = self.covs[k]
            gain = c[np.ix_(u, observed)] @ np.linalg.inv(c[np.ix_(observed, observed)])
            means.append(self.means[k][u] + gain @ (y - self.means[k][observed]))
            covs.append(c[np.ix_(u, u)] - gain @ c[np.ix_(observed, u)])
        return Mixture(w / w.sum(), np.array(means), np.array(covs))

    def marginal_density(self, observed: list[int], y: np.ndarray) -> float:
        return float(np.exp(self.log_component_densities(_full(y, observed, self.dim), observed)).sum())


def _full(y: np.ndarray, observed: list[int], dim: int) -> np.ndarray:
    row = np.zeros((1, dim))
    row[0, observed] = y
    return row


def _cov(stds, corr):
    a, b = stds
    return np.array([[a * a, corr * a * b], [corr * a * b, b * b]])


MIXTURE_2D = Mixture(
    np.array([0.3, 0.2, 0.3, 0.2]),
    np.array([[-2.0, -1.5], [-1.5, 2.0], [1.5, -2.0], [2.0, 1.5]]),
    np.array([_cov((0.45, 0.35), 0.5), _cov((0.35, 0.45), -0.5), _cov((0.4, 0.4), 0.3), _cov((0.45, 0.4), -0.3)]),
)
MIXTURE_3D = Mixture(
    np.array([0.4, 0.3, 0.3]),
    np.array([[-2.0, 0.0, 1.0], [0.0, 2.0, -1.0], [2.0, -1.0, 0.0]]),
    np.array(
        [
            [[0.25, 0.10, 0.0], [0.10, 0.25, 0.05], [0.0, 0.05, 0.2]],
            [[0.2, -0.05, 0.05], [-0.05, 0.3, 0.0], [0.05, 0.0, 0.25]],
            [[0.3, 0.0, -0.1], [0.0, 0.2, 0.05], [-0.1, 0.05, 0.25]],
        ]
    ),
)
MIXTURES = {"2-D mixture": MIXTURE_2D, "3-D mixture": MIXTURE_3D}
# (observed coordinates, observed values): a high-density and a low-density value (or two) for each mixture
CASES = {
    "2-D mixture": [([0], [-1.75]), ([0], [0.0]), ([0], [1.75]), ([0], [3.0])],
    "3-D mixture": [([0], [-2.0]), ([0], [1.0]), ([0, 1], [0.0, 2.0]), ([0, 1], [1.0, 0.5])],
}


def labelled_moons(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``make_dataset("moons", n, seed)`` with its moon labels (the same random stream: 1 = upper moon)."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0.0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(angle), 1.0 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    return np.stack([x, y], axis=1) + 0.1 * rng.standard_normal((n, 2)), upper.astype(np.int64)


def moon_of(x: np.ndarray) -> np.ndarray:
    """The nearer moon's arc (1 = upper) of each point."""
    theta = np.linspace(0, np.pi, 400)
    upper = np.stack([np.cos(theta), np.sin(theta)], 1)
    lower = np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], 1)
    d_up = np.sqrt(((x[:, None] - upper) ** 2).sum(-1)).min(1)
    d_low = np.sqrt(((x[:, None] - lower) ** 2).sum(-1)).min(1)
    return (d_up < d_low).astype(np.int64)


_MODELS: dict[tuple, tuple[DDPM, float]] = {}  # the unconditional mixture models are shared by two parts


def fit(data, labels, seed, epochs, batch_size, num_classes=0, steps=10, label_dropout=DEFAULT_LABEL_DROPOUT):
    key = (data.shape, float(data[0, 0]), seed, epochs, batch_size, num_classes, steps)
    if labels is None and key in _MODELS:
        return _MODELS[key]
    _MODELS[key] = _fit(data, labels, seed, epochs, batch_size, num_classes, steps, label_dropout)
    return _MODELS[key]


def _fit(data, labels, seed, epochs, batch_size, num_classes=0, steps=10, label_dropout=DEFAULT_LABEL_DROPOUT):
    pyro.set_rng_seed(seed)
    ddpm = DDPM(data.shape[1], steps=steps, num_classes=num_classes)
    start = time.perf_counter()
    train_ddpm(ddpm, data, labels=labels, epochs=epochs, batch_size=batch_size, progress=False, seed=seed,
               label_dropout=label_dropout)  # fmt: skip
    return ddpm, time.perf_counter() - start


def ed(a, b) -> float:
    return float(energy_distance(torch.as_tensor(a), torch.as_tensor(b))) * 1e3


def part_labels(cfg, seeds) -> list[str]:
    lines = [
        f"### Labels: per-class accuracy and energy distance on Gaussian mixtures ({cfg['n_train']} training points, "
        f"{cfg['epochs']} epochs of batches of {cfg['batch']}, T = 10, label dropout {cfg['label_dropout']}; "
        f"{cfg['n_eval']} samples per class)",
        "",
        "| data | seed | class | accuracy w=0 | w=1 | w=3 | true class samples | ED x1e-3 w=0 | w=1 | w=3 | ED floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for name, mixture in MIXTURES.items():
        acc0 = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            data, labels = mixture.sample(cfg["n_train"], rng)
            labelled, _ = fit(data, labels, seed, cfg["epochs"], cfg["batch"], num_classes=len(mixture.weights),
                              label_dropout=cfg["label_dropout"])  # fmt: skip
            plain, _ = fit(data, None, seed, cfg["epochs"], cfg["batch"])
            pool, pool_labels = mixture.sample(40 * cfg["n_eval"], np.random.default_rng(1000 + seed))
            for k in range(len(mixture.weights)):
                exact = pool[pool_labels == k]
                accs, eds = [], []
                for w in (0.0, 1.0, 3.0):
                    draws = ancestral_sample(labelled, cfg["n_eval"], labels=k, guidance=w).double().numpy()
                    accs.append((mixture.classify(draws) == k).mean())
                    eds.append(ed(draws, exact[: cfg["n_eval"]]))
                acc0.append(accs[0])
                ceiling = (mixture.classify(exact[: cfg["n_eval"]]) == k).mean()
                floor = ed(exact[cfg["n_eval"] : 2 * cfg["n_eval"]], exact[: cfg["n_eval"]])
                lines.append(
                    f"| {name} | {seed} | {k} | {accs[0]:.4f} | {accs[1]:.4f} | {accs[2]:.4f} | {ceiling:.4f} | "
                    f"{eds[0]:.2f} | {eds[1]:.2f} | {eds[2]:.2f} | {floor:.2f} |"
                )
                print(lines[-1], flush=True)
            reference = pool[: cfg["n_eval"]]
            null = ed(ancestral_sample(labelled, cfg["n_eval"]).double().numpy(), reference)
            uncond = ed(ancestral_sample(plain, cfg["n_eval"]).double().numpy(), reference)
            floor = ed(pool[cfg["n_eval"] : 2 * cfg["n_eval"]], reference)
            summary.append(f"| {name} | {seed} | {null:.2f} | {uncond:.2f} | {floor:.2f} |")
        lines.append(f"| {name} | all | mean | **{np.mean(acc0):.4f}** (min {np.min(acc0):.4f}) | | | | | | | |")
    lines += [
        "",
        "Unconditional samples: the labelled model's null label against the whole mixture, beside an unconditional "
        "DDPM trained on the same data with the same seed and budget (energy distance x1e-3; one sample each):",
        "",
        "| data | seed | labelled model, null label | unconditional model | floor |",
        "|---|---|---|---|---|",
        *summary,
    ]
    return lines


def w1(draws: np.ndarray, exact: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean over columns of the 1-D W1 distance from ``draws`` to ``exact`` (whose rows ``weights`` weighs)."""
    return float(
        np.mean([wasserstein_distance(draws[:, j], exact[:, j], None, weights) for j in range(draws.shape[1])])
    )


#: (column label, method, twist, particles) of the imputation table
IMPUTERS = [("replace", "replace", None, 1)] + [
    (f"{twist} {p}", "smc", twist, p) for twist in ("forward", "denoiser") for p in (8, 32, 128)
]


def impute_methods(ddpm, row, observed, u, seed, m) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """M imputations of the missing coordinates by each of :data:`IMPUTERS` (observed entries asserted bit-exact)
    and the milliseconds per imputed row of each."""
    draws, times = {}, {}
    for label, method, twist, particles in IMPUTERS:
        start = time.perf_counter()
        filled = impute(ddpm, row, method=method, twist=twist, num_particles=particles, num_imputations=m, seed=seed)
        times[label] = (time.perf_counter() - start) / m * 1e3
        filled = filled[:, 0].numpy()
        assert np.array_equal(filled[:, observed], np.repeat(row[:, observed], m, 0)), "not exact"
        draws[label] = filled[:, u]
    return draws, times


def model_conditional(ddpm, row, u, twist, particles, runs, seed) -> tuple[np.ndarray, np.ndarray]:
    """The model's own conditional of the missing coordinates as weighted particles: every particle of ``runs``
    independent SMC runs of ``particles`` particles each (the ``TwistedSMC`` handler over ``ddpm.model``) with its
    normalised final weight, in data units. Consistent as ``particles`` grows, whatever the twist."""
    x = torch.as_tensor(row, dtype=ddpm.betas.dtype)
    mask = ~torch.isnan(x)
    y = torch.where(mask, ddpm.scaler(torch.nan_to_num(x)), torch.zeros_like(x))
    pyro.set_rng_seed(seed)
    values, weights = [], []
    for _ in range(runs):
        handler = TwistedSMC(ddpm, y, mask, particles, twist=twist)
        with torch.no_grad(), handler:
            final = ddpm.model(num_samples=particles)
        values.append(ddpm.scaler.inverse(final).double().numpy()[:, u])
        weights.append(torch.softmax(handler.log_weights[0].double(), -1).numpy() / runs)
    return np.concatenate(values), np.concatenate(weights)


def rejection_sample(ddpm, y, observed, u, exact, window, budget, batch) -> str:
    """Unconditional draws whose observed coordinates fall within ``window`` of ``y``, for ``budget`` seconds:
    ``"accepted, W1"``."""
    spent, accepted = 0.0, []
    while spent < budget or not accepted and spent < 10 * budget:
        start = time.perf_counter()
        draws = ancestral_sample(ddpm, batch).double().numpy()
        spent += time.perf_counter() - start
        keep = np.all(np.abs(draws[:, observed] - y) < window, axis=1)
        accepted.append(draws[keep])
    accepted_draws = np.concatenate(accepted)
    if len(accepted_draws) >= 10:
        return f"{len(accepted_draws)}, {w1(accepted_draws[:, u], exact):.3f}"
    return f"{len(accepted_draws)}, -"


@dataclass
class ImputeRow:
    """The figures of one (model, observed value) row of the imputation tables."""

    name: str
    seed: int
    observed: str
    density: float
    floor: float
    exact: dict[str, float]  # W1 to the exact conditional, per imputer and "reference"
    model: dict[str, float]  # W1 to the model's own conditional (the reference), per imputer
    times: dict[str, float]
    reference: str  # ESS and the W1 between the two references
    rejection: str


def impute_case(ddpm, mixture, observed, values, seed, scale, cfg) -> ImputeRow:
    """One observed row: the imputers against the exact conditional and against the model's own (a large
    denoiser-twist SMC reference, checked against a forward-twist one of the same size), and rejection sampling."""
    y = np.array(values)
    conditional = mixture.conditional(observed, y)
    exact, _ = conditional.sample(20000, np.random.default_rng(7))
    floors = [w1(conditional.sample(cfg["m"], np.random.default_rng(100 + r))[0], exact) for r in range(10)]
    peak = max(mixture.marginal_density(observed, mixture.means[k][observed]) for k in range(len(mixture.weights)))
    row = np.full((1, mixture.dim), np.nan)
    row[0, observed] = y
    u = [d for d in range(mixture.dim) if d not in observed]
    draws, times = impute_methods(ddpm, row, observed, u, seed, cfg["m"])
    size = (cfg["reference_particles"], cfg["reference_runs"])
    ref, ref_w = model_conditional(ddpm, row, u, "denoiser", *size, seed=10_000 + seed)
    check, check_w = model_conditional(ddpm, row, u, "forward", *size, seed=20_000 + seed)
    _, copies = np.unique(ref, axis=0, return_inverse=True)  # resampled copies of one particle count once
    ess = 1.0 / float((np.bincount(copies.ravel(), weights=ref_w) ** 2).sum())
    agreement = float(np.mean([wasserstein_distance(ref[:, j], check[:, j], ref_w, check_w) for j in range(len(u))]))
    to_exact = {label: w1(d, exact) for label, d in draws.items()}
    to_exact["reference"] = w1(exact, ref, ref_w)
    to_model = {label: w1(d, ref, ref_w) for label, d in draws.items()}
    budget = times[f"{TWISTS.default} 128"] * cfg["m"] / 1e3  # rejection from the same model as long as SMC-128
    window = cfg["window"] * scale[observed]
    rejection = rejection_sample(ddpm, y, observed, u, exact, window, budget, cfg["rejection_batch"])
    return ImputeRow(
        "", seed, ", ".join(f"x{d} = {v:g}" for d, v in zip(observed, values, strict=True)),
        mixture.marginal_density(observed, y) / peak, float(np.mean(floors)), to_exact, to_model, times,
        f"{ess:.0f}, {agreement:.3f}", rejection,
    )  # fmt: skip


def _cells(values: dict[str, float], labels: list[str]) -> str:
    return " | ".join(f"{values[k]:.3f}" for k in labels)


def impute_summary(rows: list[ImputeRow], seeds: list[int]) -> list[str]:
    """Means over rows (and the spread of the per-seed means over seeds) and the replace / SMC ratios."""
    labels = [label for label, *_ in IMPUTERS]
    lines = []
    for key, title in (("exact", "exact conditional"), ("model", "model's own conditional")):
        table = {k: np.array([getattr(r, key)[k] for r in rows]) for k in labels}
        per_seed = {k: [np.mean([getattr(r, key)[k] for r in rows if r.seed == s]) for s in seeds] for k in labels}
        cells = " | ".join(f"{table[k].mean():.3f} +- {np.std(per_seed[k]):.3f}" for k in labels)
        lines.append(f"| W1 to the {title}: mean +- sd over seeds | {cells} |")
    lines.append("")
    for twist in ("forward", "denoiser"):
        replace, smc = np.array([r.exact["replace"] for r in rows]), np.array([r.exact[f"{twist} 128"] for r in rows])
        ratio = replace / smc
        lines.append(
            f"- replace / {twist}-128 W1 to the exact conditional: ratio of means {replace.mean() / smc.mean():.2f}x, "
            f"mean of per-row ratios {ratio.mean():.2f}x (min {ratio.min():.2f}x, max {ratio.max():.2f}x), "
            f"rows at 3x or more: {int((ratio >= 3).sum())} of {len(ratio)}"
        )
    model_error = np.array([r.exact["reference"] for r in rows])
    lines.append(f"- the model's own conditional (the reference) to the exact one: mean W1 {model_error.mean():.3f}")
    fits = model_error < 1.0  # rows where the model has mass near the observed value
    for twist in ("forward", "denoiser"):
        replace = np.array([r.exact["replace"] for r in rows])[fits]
        smc = np.array([r.exact[f"{twist} 128"] for r in rows])[fits]
        lines.append(
            f"- without the {int((~fits).sum())} row(s) where the model's own conditional is more than 1.0 from the "
            f"exact one: replace / {twist}-128 ratio of means {replace.mean() / smc.mean():.2f}x, mean of per-row "
            f"ratios {(replace / smc).mean():.2f}x, rows at 3x or more: {int((replace / smc >= 3).sum())} of {len(smc)}"
        )
    return lines


def impute_rows(cfg, seeds) -> list[ImputeRow]:
    """Train the models and measure every observed row (printed as it comes)."""
    labels = [label for label, *_ in IMPUTERS]
    rows = []
    for name, mixture in MIXTURES.items():
        for seed in seeds:
            data, _ = mixture.sample(cfg["impute_n"], np.random.default_rng(seed))
            ddpm, _ = fit(data, None, seed, cfg["impute_epochs"], cfg["batch"], steps=cfg["impute_steps"])
            for observed, values in CASES[name]:
                r = impute_case(ddpm, mixture, observed, values, seed, data.std(0), cfg)
                r.name = name
                rows.append(r)
                print(f"| {name} | {seed} | {r.observed} | exact: {_cells(r.exact, labels)} | model: "
                      f"{_cells(r.model, labels)} | ref {r.reference}", flush=True)  # fmt: skip
    return rows


def load_rows(paths: str) -> list[ImputeRow]:
    """The rows saved by runs with ``--save-rows`` (e.g. one per seed, run side by side), in table order."""
    rows = [ImputeRow(**d) for path in paths.split(",") for d in json.loads(Path(path).read_text())]
    return sorted(rows, key=lambda r: (list(MIXTURES).index(r.name), r.seed))  # stable: the cases keep their order


def part_impute(cfg, seeds, rows_out: str | None = None, rows_in: str | None = None) -> list[str]:
    labels = [label for label, *_ in IMPUTERS]
    head = " | ".join(labels)
    lines = [
        f"### Imputation: W1 to the exact conditional and to the model's own ({cfg['impute_n']} training points, "
        f"{cfg['impute_epochs']} epochs of batches of {cfg['batch']}, T = {cfg['impute_steps']}; {cfg['m']} "
        "imputations of each observed row; "
        "W1 = mean over the imputed coordinates of the 1-D Wasserstein-1 distance; forward / denoiser = the SMC "
        "method's twist, with 8, 32, 128 particles; reference = the model's own conditional, all weighted particles "
        f"of {cfg['reference_runs']} denoiser-twist SMC run(s) of {cfg['reference_particles']} particles)",
        "",
        "W1 to the exact conditional (20,000 exact draws):",
        "",
        f"| data | seed | observed | density / at densest mean | W1 floor | {head} | reference |",
        "|---|---|---|---|---|" + "---|" * (len(labels) + 1),
    ]
    rows = impute_rows(cfg, seeds) if rows_in is None else load_rows(rows_in)
    if rows_out is not None:
        Path(rows_out).write_text(json.dumps([asdict(r) for r in rows]))
    seeds = sorted({r.seed for r in rows})
    for r in rows:
        lines.append(f"| {r.name} | {r.seed} | {r.observed} | {r.density:.3f} | {r.floor:.3f} | "
                     f"{_cells(r.exact, labels)} | {r.exact['reference']:.3f} |")  # fmt: skip
    floor = np.mean([r.floor for r in rows])
    lines.append(f"| all | all | mean | | {floor:.3f} | " + " | ".join(
        f"**{np.mean([r.exact[k] for r in rows]):.3f}**" for k in labels + ["reference"]) + " |")  # fmt: skip
    lines += [
        "",
        "W1 to the model's own conditional (the reference: the sampler's error alone), the reference's effective "
        "sample size and its W1 to a forward-twist reference of the same size, milliseconds per imputed row, and "
        f"rejection sampling from the same model at {TWISTS.default}-128's time (the default twist; draws within +-"
        f"{cfg['window']} sd of the observed values: accepted, W1 to the exact conditional):",
        "",
        f"| data | seed | observed | {head} | reference ESS, W1 to forward-twist reference | "
        "ms replace / forward 8, 32, 128 / denoiser 8, 32, 128 | rejection |",
        "|---|---|---|" + "---|" * (len(labels) + 3),
    ]
    for r in rows:
        ms = r.times
        lines.append(
            f"| {r.name} | {r.seed} | {r.observed} | {_cells(r.model, labels)} | {r.reference} | "
            f"{ms['replace']:.2f} / {ms['forward 8']:.1f}, {ms['forward 32']:.1f}, {ms['forward 128']:.1f} / "
            f"{ms['denoiser 8']:.1f}, {ms['denoiser 32']:.1f}, {ms['denoiser 128']:.1f} | {r.rejection} |"
        )
    lines.append("| all | all | mean | " + " | ".join(
        f"**{np.mean([r.model[k] for r in rows]):.3f}**" for k in labels) + " | | | |")  # fmt: skip
    lines += ["", "Summary (8 observed rows x seeds):", "", f"| | {head} |", "|---|" + "---|" * len(labels)]
    return lines + impute_summary(rows, seeds)


def part_moons(cfg, seeds) -> list[str]:
    lines = [
        f"### Two moons: the labelled network's null label vs the unconditional model ({cfg['moons_n']} points, "
        f"{cfg['moons_epochs']} epochs of batches of 2048, T = 10, label dropout {cfg['label_dropout']}; ED ratio "
        f"over {cfg['pairs']} pairs of {cfg['moons_eval']} points over a {cfg['floor_pairs']}-pair floor)",
        "",
        "| seed | unconditional DDPM: ED ratio | labelled DDPM, null label: ED ratio | labelled: moon accuracy w=0 | "
        "w=1 | w=3 | train s (unconditional / labelled) |",
        "|---|---|---|---|---|---|---|",
    ]
    moons = lambda size, seed: labelled_moons(size, seed)[0]  # noqa: E731
    floor = noise_floor(moons, cfg["moons_eval"], pairs=cfg["floor_pairs"], seed=100)
    plain_r, null_r = [], []
    for seed in seeds:
        data, labels = labelled_moons(cfg["moons_n"], seed)
        plain, t_plain = fit(data, None, seed, cfg["moons_epochs"], None)
        labelled, t_labelled = fit(data, labels, seed, cfg["moons_epochs"], None, num_classes=2,
                                   label_dropout=cfg["label_dropout"])  # fmt: skip
        q_plain = energy_distance_ratio(
            lambda n, model=plain: ancestral_sample(model, n),
            moons,
            cfg["moons_eval"],
            pairs=cfg["pairs"],
            seed=100,
            floor=floor,
        )
        q_null = energy_distance_ratio(
            lambda n, model=labelled: ancestral_sample(model, n),
            moons,
            cfg["moons_eval"],
            pairs=cfg["pairs"],
            seed=100,
            floor=floor,
        )
        accuracy = []
        for w in (0.0, 1.0, 3.0):
            hits = [
                (moon_of(ancestral_sample(labelled, 2000, labels=k, guidance=w).double().numpy()) == k).mean()
                for k in (0, 1)
            ]
            accuracy.append(np.mean(hits))
        plain_r.append(q_plain.ratio)
        null_r.append(q_null.ratio)
        lines.append(
            f"| {seed} | {q_plain.ratio:.2f} +- {q_plain.se:.2f} | {q_null.ratio:.2f} +- {q_null.se:.2f} | "
            f"{accuracy[0]:.4f} | {accuracy[1]:.4f} | {accuracy[2]:.4f} | {t_plain:.0f} / {t_labelled:.0f} |"
        )
        print(lines[-1], flush=True)
    lines.append(f"| mean | **{np.mean(plain_r):.2f}** | **{np.mean(null_r):.2f}** | | | | |")
    return lines + moons_summary(plain_r, null_r)


def moons_summary(plain: list[float], null: list[float]) -> list[str]:
    """Mean +- standard error over seeds and the paired difference (null label - unconditional) with its t-test."""
    if len(plain) < 2:
        return []
    diff = np.asarray(null) - np.asarray(plain)
    sem = lambda a: float(np.std(a, ddof=1) / np.sqrt(len(a)))  # noqa: E731
    test = ttest_rel(null, plain)
    return [
        "",
        f"Over the {len(plain)} seeds (mean +- standard error): unconditional {np.mean(plain):.2f} +- "
        f"{sem(plain):.2f}, null label {np.mean(null):.2f} +- {sem(null):.2f}; paired difference "
        f"(null - unconditional) {diff.mean():+.2f} +- {sem(diff):.2f} (paired t = {test.statistic:.2f}, "
        f"two-sided p = {test.pvalue:.2f}).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    parser.add_argument("--part", default="all", help="all, or a comma-separated list of labels, impute, moons")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (comma-separated)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--moons-epochs",
        type=int,
        default=1000,
        help="epochs of the two-moons part (default 1000: 5,000 optimizer steps, the defaults)",
    )
    parser.add_argument(
        "--impute-steps",
        type=int,
        default=20,
        help="T of the imputation part's models (default 20: the decoder step's sd is 0.05 in scaled units, "
        "0.1 at T = 10, which blurs the model's own conditional at low-density observed values)",
    )
    parser.add_argument(
        "--impute-points",
        type=int,
        default=None,
        help="training points of the imputation part's models (default 4000, the labels part's; 500 with --quick)",
    )
    parser.add_argument(
        "--impute-epochs",
        type=int,
        default=None,
        help="training epochs of the imputation part's models (default 250, the labels part's; 20 with --quick)",
    )
    parser.add_argument(
        "--label-dropout",
        type=float,
        default=DEFAULT_LABEL_DROPOUT,
        help=f"label dropout of the labelled models (labels and moons parts; default {DEFAULT_LABEL_DROPOUT}, "
        "the library's)",
    )
    parser.add_argument("--save-rows", default=None, help="impute part: also save its rows to this JSON file")
    parser.add_argument(
        "--from-rows",
        default=None,
        help="impute part: build its tables from rows saved by --save-rows (comma-separated files, e.g. one run per "
        "seed side by side) instead of measuring",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = {
        "n_train": 4000,
        "epochs": 250,
        "batch": 512,
        "n_eval": 2000,
        "m": 400,
        "window": 0.05,
        "reference_particles": 16384,
        "reference_runs": 1,
        "rejection_batch": 20000,
        "moons_n": 10000,
        "moons_epochs": 1000,
        "moons_eval": 4000,
        "pairs": 20,
        "floor_pairs": 50,
    }
    cfg["moons_epochs"] = args.moons_epochs
    cfg["impute_steps"] = args.impute_steps
    cfg["label_dropout"] = args.label_dropout
    if args.quick:
        seeds = seeds[:1]
        cfg.update(
            n_train=500,
            epochs=20,
            n_eval=200,
            m=20,
            rejection_batch=500,
            reference_particles=256,
            reference_runs=1,
            moons_n=300,
            moons_epochs=10,
            moons_eval=200,
            pairs=2,
            floor_pairs=2,
        )
    cfg["impute_n"] = cfg["n_train"] if args.impute_points is None else args.impute_points
    cfg["impute_epochs"] = cfg["epochs"] if args.impute_epochs is None else args.impute_epochs
    for flag, value in (("--impute-points", cfg["impute_n"]), ("--impute-epochs", cfg["impute_epochs"])):
        if value < 1:
            parser.error(f"{flag}: expected a positive integer, got {value}")
    parts = {"labels", "impute", "moons"} if args.part == "all" else set(args.part.split(","))
    if not parts <= {"labels", "impute", "moons"}:
        parser.error(f"--part: expected all or a list of labels, impute, moons, got {args.part!r}")
    lines: list[str] = []
    if "labels" in parts:
        lines += part_labels(cfg, seeds) + [""]
    if "impute" in parts:
        lines += part_impute(cfg, seeds, args.save_rows, args.from_rows) + [""]
    if "moons" in parts:
        lines += part_moons(cfg, seeds) + [""]
    text = "\n".join(lines)
    print(text)
    if not args.no_write and not args.quick:
        write_section(text)


def write_section(body: str) -> None:
    """Write the "## Diffusion: conditioning" section of RESULTS.md; each part replaces only its "### ..." block."""
    intro = (
        f"{HEADING}\n\nCommand: `python benchmarks/diffusion_conditional.py` (or `--part labels,impute` and "
        f"`--part moons` run side by side), {datetime.date.today().isoformat()}, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, "
        "1 torch thread per part, on the shared 2-core machine under load (times: compare within a row only).\n\n"
    )
    write_subsections(HEADING, intro, body, order=("Labels", "Imputation", "Two"))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
