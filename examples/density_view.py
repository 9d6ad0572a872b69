"""The density view of a reverse SDE: particles and the Fokker–Planck equation side by side.

The reverse SDE with the exact score of a 1-D mixture is run twice from the prior at `T`: as
particles (`jd.sample` with `trajectory=True`) and as a density on a grid
(`jd.pde.solve_fokker_planck` with `Reverse()`), saved at the same times. The histograms of
the particles follow the grid densities, and at `t_end` both match the exact noised law.

    python examples/density_view.py [--tiny] [--out examples-out/density_view.png]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _common import figure, parse, save

import jaxdiff as jd
from jaxdiff import pde


def main(argv=None) -> str:
    args = parse(__doc__, "density_view.png", argv)
    n, cells, steps = (256, 64, 20) if args.tiny else (20000, 256, 200)
    process = jd.OU(T=3.0)
    law = jd.GaussianMixture(
        jnp.array([[-2.0], [1.0], [2.5]]), jnp.array([0.4, 0.3, 0.2]), jnp.array([0.5, 0.3, 0.2])
    )
    score = jd.ExactScore(process, law)
    t_end = jnp.array(0.02)

    ts, xs = jd.sample(
        jax.random.PRNGKey(0),
        score,
        process,
        (n, 1),
        steps=steps,
        t_end=t_end,
        grid=jd.UniformGrid(),
        trajectory=True,
    )
    picks = np.linspace(0, len(ts) - 1, 4).round().astype(int)[1:]  # three times after the start
    grid = pde.Grid(-7.0, 7.0, cells)
    q = pde.solve_fokker_planck(
        process,
        grid,
        grid.density(process.prior_log_prob),
        t0=process.T,
        t1=t_end,
        score=score,
        dynamics=pde.Reverse(),
        saveat=ts[picks],
    )

    centres = np.asarray(grid.centres(0))
    fig, axes = figure(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, k, qk in zip(axes, picks, q):
        ax.hist(
            np.asarray(xs[k, :, 0]), bins=60, range=(-7, 7), density=True, color="0.75", label="particles"
        )
        ax.plot(centres, np.asarray(qk), label="Fokker–Planck on the grid")
        ax.plot(
            centres,
            np.asarray(grid.density(law.noised(process, ts[k]).log_prob)),
            "k--",
            lw=1,
            label="exact law of X_t",
        )
        ax.set(title=f"t = {float(ts[k]):.3g}", xlabel="x")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"reverse SDE from the prior at T = {process.T:g} (exact score); "
        f"L1 at t_end: {float(pde.particle_discrepancy(grid, q[-1], xs[-1])):.3f} (particles), "
        f"{float(pde.l1_distance(grid, q[-1], grid.density(law.noised(process, t_end).log_prob))):.1e} (grid)"
    )
    return save(fig, args.out)


if __name__ == "__main__":
    main()
