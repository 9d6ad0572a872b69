"""Memorisation against the stopping time: the exact score of a finite data set copies it.

The exact score of `N` training points (a `PointCloud`) is what a perfectly trained network
would learn. Run the reverse SDE with it down to a stopping time `t_end` and count the samples
that are copies of a training point (ratio test: the nearest training point is three times
closer than the second nearest). As `t_end -> 0` nearly every sample is a copy; stopping early
gives new points, blurred around the data (Cao, Johnston, Laurent, Le and Motsch, *Generative
diffusion models from a PDE perspective*, arXiv:2501.17054, 2025).

    python examples/memorisation.py [--tiny] [--n-data 64] [--out examples-out/memorisation.png]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _common import figure, parse, save

import jaxdiff as jd


def main(argv=None) -> str:
    args = parse(
        __doc__, "memorisation.png", argv, lambda ap: ap.add_argument("--n-data", type=int, default=64)
    )
    n_data, n, steps, t_ends = (
        (16, 32, 20, np.geomspace(1e-3, 0.3, 3))
        if args.tiny
        else (args.n_data, 1000, 200, np.geomspace(1e-4, 1.0, 9))
    )
    process = jd.OU()
    data = jd.data.two_moons(jax.random.PRNGKey(0), n_data)
    score = jd.ExactScore(process, jd.PointCloud(data))
    copies, samples = [], {}
    for t_end in t_ends:
        x = jd.sample(jax.random.PRNGKey(1), score, process, (n, 2), steps=steps, t_end=jnp.asarray(t_end))
        copies.append(float(jd.metrics.copy_fraction(x, data)))
        samples[float(t_end)] = np.asarray(x)

    fig, axes = figure(1, 3, figsize=(13, 4))
    axes[0].semilogx(t_ends, copies, "o-")
    axes[0].set(
        xlabel="stopping time t_end",
        ylabel="fraction of copies",
        ylim=(-0.02, 1.02),
        title=f"exact score of {n_data} points (OU)",
    )
    for ax, t_end in zip(axes[1:], (t_ends[0], t_ends[-1])):
        ax.scatter(*samples[float(t_end)].T, s=3, label="samples")
        ax.scatter(*np.asarray(data).T, s=12, c="k", marker="x", label="training points")
        ax.set(title=f"t_end = {t_end:.2g}")
        ax.legend(fontsize=8)
    return save(fig, args.out)


if __name__ == "__main__":
    main()
