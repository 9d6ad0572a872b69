r"""For Gaussian paths the flow-matching velocity equals the probability-flow drift.

Any process with $X_t = \alpha(t) X_0 + \sigma(t) Z$ has two descriptions of one
deterministic transport of its marginals: flow matching's marginal velocity (Lipman et al.
2023, arXiv:2210.02747; Liu, Gong & Liu 2023, arXiv:2209.03003)

    v(t, x) = alpha'(t) E[X0 | X_t = x] + sigma'(t) E[Z | X_t = x],

and the probability-flow ODE of score-based diffusion (Song et al. 2021, arXiv:2011.13456)

    b(t, x) = f(t) x - g(t)^2 / 2 * grad log p_t(x),   f = alpha'/alpha,
    g^2 = d sigma^2/dt - 2 f sigma^2.

Tweedie's formulas make them the same function. Measured: `jd.ExactVelocity` (the exact
posterior mean of the law, no score) against `f x - g^2/2 jd.ExactScore` (the exact score,
no posterior mean), in float64, at `n_points` draws of `(t, X_t)` per process and law:
the rectified-flow and cosine interpolants, VP, OU and VE (the tiny profile: the first
and VP), each with a Gaussian and a
three-component Gaussian mixture in 2-D. Criterion: the largest relative difference
`|v - b| / (1 + |b|)` is at most 1e-10 (predicted: 0).

**Hook.** `main(..., perturb=eps)` adds `eps * x` to the flow-matching velocity before the
comparison: any `eps` above about 1e-9 must turn the row to "no" (a test checks that
`eps = 1e-6` does), so the row can fail.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import close, make_row, profile_sizes, save_figure, standalone, write_json

NAME = "flow_equivalence"
_ALL = ("LinearInterpolant", "CosineInterpolant", "VP", "OU", "VE")
PROFILES = {
    "tiny": {"n_points": 64, "processes": ("LinearInterpolant", "VP")},
    "quick": {"n_points": 2000, "processes": _ALL},
    "full": {"n_points": 50_000, "processes": _ALL},
}
TOL = 1e-10  # relative, float64


def _processes():
    return {
        "LinearInterpolant": jd.LinearInterpolant(),
        "CosineInterpolant": jd.CosineInterpolant(),
        "VP": jd.VP(),
        "OU": jd.OU(T=3.0),
        "VE": jd.VE(sigma_max=10.0),
    }


def _laws():
    return {
        "gaussian": jd.Gaussian(jnp.array([1.0, -0.5]), jnp.array([[1.0, 0.6], [0.6, 0.8]])),
        "mixture": jd.GaussianMixture(
            jnp.array([[-2.0, 0.5], [1.5, -1.0], [0.3, 2.0]]),
            jnp.array([0.4, 0.7, 0.3]),
            jnp.array([0.3, 0.5, 0.2]),
        ),
    }


def _differences(process, law, key, n, perturb):
    kt, kx = jax.random.split(key)
    T = float(process.T)
    # times in [0.01 T, 0.99 T]: both sides are finite there for every process
    ts = T * (0.01 + 0.98 * jax.random.uniform(kt, (n,)))
    v = jd.ExactVelocity(process, law).without_time_checks()
    s = jd.ExactScore(process, law).without_time_checks()

    @jax.jit
    def one(t, k):
        x = law.sample_at(k, 1, process.alpha(t), process.sigma(t))[0]  # a draw of X_t
        fm = v(t, x) + perturb * x
        pf = process.f(t) * x - 0.5 * process.g2(t) * s(t, x)
        return jnp.max(jnp.abs(fm - pf)) / (1.0 + jnp.max(jnp.abs(pf)))

    rel = jax.vmap(one)(ts, jax.random.split(kx, n))
    return np.asarray(ts), np.asarray(rel)


def main(out_dir, *, profile: str = "quick", key: int = 0, perturb: float = 0.0, **sizes) -> list[dict]:
    """Run the comparison; `perturb` is the hook that must make the row fail (module docstring)."""
    cfg = profile_sizes(PROFILES, profile, sizes)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = int(cfg["n_points"])
    results, curves = [], {}
    with jax.enable_x64(True):
        base = jax.random.PRNGKey(key)
        chosen = {name: p for name, p in _processes().items() if name in cfg["processes"]}
        for i, (pname, proc) in enumerate(chosen.items()):
            for j, (lname, law) in enumerate(_laws().items()):
                ts, rel = _differences(proc, law, jax.random.fold_in(base, 10 * i + j), n, float(perturb))
                results.append({"process": pname, "law": lname, "max_relative_difference": float(rel.max()),
                                "median_relative_difference": float(np.median(rel))})  # fmt: skip
                curves[f"{pname}/{lname}"] = (ts / ts.max(), rel)
    worst = max(r["max_relative_difference"] for r in results)

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (t, rel) in curves.items():
        ax.semilogy(t, np.maximum(rel, 1e-18), ".", ms=2, label=label)
    ax.axhline(TOL, color="k", ls="--", lw=0.8, label=f"criterion {TOL:g}")
    ax.set_xlabel("t / T")
    ax.set_ylabel(r"$|v_{FM} - b_{PF}| / (1 + |b_{PF}|)$")
    ax.set_title("flow-matching velocity vs probability-flow drift (float64)")
    ax.legend(fontsize=6, ncol=2)
    fig_name = save_figure(
        fig,
        out_dir,
        "flow_equivalence.png",
        "relative difference of the flow-matching velocity and the probability-flow drift",
    )

    criterion = close(
        TOL, f"max over processes, laws and {n} draws of (t, X_t) of |v - b| / (1 + |b|) <= {TOL:g}"
    )
    rows = [
        make_row(
            "flow_equivalence",
            "For Gaussian paths the flow-matching velocity equals the probability-flow drift",
            0.0,
            worst,
            figures=[fig_name],
            details={"perturb": float(perturb), "cases": results},
            criterion=criterion,
        )
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
