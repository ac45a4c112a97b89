"""Power laws through learning curves: error(N) ≈ a·N^(-b) + c (Hestness et al. 2017; Kaplan et al. 2020).

N is labelled examples (or parameters), error the test error rate. b says how fast more data pays (the
curve's slope on log-log axes once N is well above the start), c is the floor no amount of this kind of data
removes (label noise, what the model cannot represent). Fitted by weighted least squares, each point weighted
by its own uncertainty (the bootstrap CI of its accuracy); the uncertainty of a, b and c by refitting to points
redrawn within their CIs (a parametric bootstrap), so a short, noisy curve shows wide intervals, not false
precision.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_POINTS = 3  # a, b and c: three parameters need three points; with exactly three the fit has no check


def power_law(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * np.power(n, -b) + c


@dataclass
class PowerLaw:
    a: float
    b: float
    c: float
    points: int
    b_ci: tuple[float, float] = (math.nan, math.nan)
    c_ci: tuple[float, float] = (math.nan, math.nan)
    rmse: float = math.nan                      # of the fitted curve at the measured points, in error units
    draws: list[tuple[float, float, float]] = field(default_factory=list, repr=False)  # bootstrap (a, b, c)

    def __call__(self, n) -> np.ndarray:
        return power_law(np.asarray(n, dtype=float), self.a, self.b, self.c)

    def size_for(self, error: float) -> float | None:
        """The N at which the fitted curve reaches `error`; None below the floor c (never, by this curve)."""
        if error <= self.c:
            return None
        return float((self.a / (error - self.c)) ** (1 / self.b))

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("draws")
        return out


def _fit_once(n: np.ndarray, err: np.ndarray, sigma: np.ndarray) -> tuple[float, float, float]:
    from scipy.optimize import curve_fit

    floor = float(err.min())
    best, best_cost = None, math.inf
    for c0 in (0.0, 0.5 * floor, 0.9 * floor):  # a few starts: the floor is the poorly determined parameter
        y = np.clip(err - c0, 1e-9, None)
        slope, intercept = np.polyfit(np.log(n), np.log(y), 1)  # log(err - c) ≈ log a - b log N
        p0 = (math.exp(intercept), float(np.clip(-slope, 1e-3, 2.9)), c0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _ = curve_fit(power_law, n, err, p0=p0, sigma=sigma, absolute_sigma=True,
                                      bounds=([0.0, 0.0, 0.0], [np.inf, 3.0, max(floor, 1e-6)]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        cost = float((((power_law(n, *params) - err) / sigma) ** 2).sum())
        if cost < best_cost:
            best, best_cost = params, cost
    if best is None:
        raise RuntimeError("no power law fits these points")
    return tuple(float(v) for v in best)


def fit_power_law(n, err, err_low=None, err_high=None, boot: int = 300, seed: int = 0) -> PowerLaw | None:
    """Fit error ≈ a·N^(-b) + c to the points (N, error), each with its CI (err_low, err_high) when known.
    None with fewer than MIN_POINTS distinct sizes, or when no curve of this form fits them."""
    n, err = np.asarray(n, dtype=float), np.asarray(err, dtype=float)
    if len(np.unique(n)) < MIN_POINTS:
        return None
    if err_low is not None and err_high is not None:
        sigma = (np.asarray(err_high, dtype=float) - np.asarray(err_low, dtype=float)) / (2 * 1.96)
    else:
        sigma = np.full_like(err, 0.01)
    sigma = np.clip(sigma, 1e-4, None)
    try:
        a, b, c = _fit_once(n, err, sigma)
    except RuntimeError:
        return None
    law = PowerLaw(a, b, c, points=len(n), rmse=float(np.sqrt(np.mean((power_law(n, a, b, c) - err) ** 2))))
    rng = np.random.default_rng(seed)
    for _ in range(boot):
        drawn = np.clip(err + rng.normal(0, sigma), 1e-6, 1.0)
        try:
            law.draws.append(_fit_once(n, drawn, sigma))
        except RuntimeError:
            continue
    if law.draws:
        draws = np.array(law.draws)
        law.b_ci = tuple(float(v) for v in np.percentile(draws[:, 1], [2.5, 97.5]))
        law.c_ci = tuple(float(v) for v in np.percentile(draws[:, 2], [2.5, 97.5]))
    return law


def crossover(first: PowerLaw, second: PowerLaw, low: float, high: float) -> float | None:
    """The smallest N in [low, high] from which `first`'s fitted error stays below `second`'s; None if never."""
    grid = np.geomspace(low, high, 4000)
    below = first(grid) < second(grid)
    if not below[-1]:
        return None
    above = np.flatnonzero(~below)
    return float(grid[0] if not len(above) else grid[above[-1] + 1])


def measured_crossover(sizes: list[int], first: list[float], second: list[float]) -> int | None:
    """The smallest measured size from which `first`'s error is below `second`'s at every larger size too."""
    below = [f < s for f, s in zip(first, second)]
    if not below or not below[-1]:
        return None
    i = len(below) - 1
    while i > 0 and below[i - 1]:
        i -= 1
    return sizes[i]
