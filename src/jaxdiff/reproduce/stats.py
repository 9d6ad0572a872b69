"""Statistics shared by the experiment scripts (NumPy; not on any numerical path of the library)."""

from __future__ import annotations

import numpy as np


def fit_power_law(x, y) -> tuple[float, float]:
    """Least-squares fit of `log y = log c + p log x`; returns `(p, c)`."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    p, logc = np.polyfit(lx, ly, 1)
    return float(p), float(np.exp(logc))


def chi_square_test(counts, probs) -> tuple[float, float, int]:
    """Pearson's chi-square goodness-of-fit test of `counts` against probabilities `probs`.

    Cells whose expected count is below 5 are pooled (the chi-square approximation needs
    it). Returns `(statistic, p_value, degrees_of_freedom)`.
    """
    import jax.scipy.special as jss

    counts = np.asarray(counts, float)
    probs = np.asarray(probs, float) / np.sum(probs)
    expected = counts.sum() * probs
    order = np.argsort(expected)
    obs_cells, exp_cells, o, e = [], [], 0.0, 0.0
    for i in order:  # pool the smallest cells until each pooled cell expects >= 5
        o, e = o + counts[i], e + expected[i]
        if e >= 5:
            obs_cells.append(o)
            exp_cells.append(e)
            o, e = 0.0, 0.0
    if e > 0 and exp_cells:
        obs_cells[-1] += o
        exp_cells[-1] += e
    obs, exp = np.array(obs_cells), np.array(exp_cells)
    dof = len(obs) - 1
    if dof < 1:
        return 0.0, 1.0, 0
    stat = float(np.sum((obs - exp) ** 2 / exp))
    # survival function of chi2(dof): the regularised upper incomplete gamma Q(dof/2, stat/2)
    p = float(jss.gammaincc(dof / 2.0, stat / 2.0))
    return stat, p, dof


def spearman(a, b) -> float:
    """Spearman's rank correlation of two sequences (no ties expected)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def richardson(values, hs, order: float) -> tuple[float, float]:
    """Extrapolate a quantity computed at mesh sizes `hs` (finest last) to `h = 0`, assuming
    an error `C h^order`; returns `(extrapolated value, error estimate of the finest value)`.

    The estimate is the difference between the finest value and the extrapolation: a
    tolerance derived from a refinement study rather than from a single grid.
    """
    v = np.asarray(values, float)
    h = np.asarray(hs, float)
    r = (h[-2] / h[-1]) ** order
    extrapolated = v[-1] + (v[-1] - v[-2]) / (r - 1.0)
    return float(extrapolated), float(abs(v[-1] - extrapolated))
