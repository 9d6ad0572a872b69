"""The log-likelihood of test points through the probability-flow ODE, against the exact one.

`jd.log_likelihood` integrates the probability-flow ODE from each point to `T` with the
instantaneous change of variables. With the exact score of a Gaussian mixture the model's
density at `t_end` is the mixture noised to `t_end`, known in closed form: the two must agree
(to the ODE tolerance and the prior mismatch at `T`). The right panel shows where the test
points sit on the exact log-density.

    python examples/likelihood.py [--tiny] [--n 200] [--out examples-out/likelihood.png]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _common import figure, parse, save

import jaxdiff as jd


def main(argv=None) -> str:
    args = parse(__doc__, "likelihood.png", argv, lambda ap: ap.add_argument("--n", type=int, default=200))
    n = 8 if args.tiny else args.n
    process = jd.OU()
    law = jd.GaussianMixture(jnp.array([[-1.5, 0.0], [1.5, 0.5], [0.0, -1.5]]), 0.5)
    score = jd.ExactScore(process, law)
    t_end = jnp.array(1e-2)
    x = jnp.concatenate(
        [
            law.sample(jax.random.PRNGKey(0), n // 2),  # typical points
            3.0 * jax.random.normal(jax.random.PRNGKey(1), (n - n // 2, 2)),
        ]
    )  # and others

    model = jax.jit(jax.vmap(lambda xi: jd.log_likelihood(score, process, xi, t_end=t_end)))(x)
    exact = jax.vmap(law.noised(process, t_end).log_prob)(x)
    err = float(jnp.max(jnp.abs(model - exact)))

    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4.3))
    ax1.scatter(exact, model, s=8)
    lo, hi = float(exact.min()), float(exact.max())
    ax1.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax1.set(
        xlabel="exact log p_t_end(x)",
        ylabel="probability-flow log-likelihood",
        title=f"{n} test points, largest gap {err:.1e} nats",
    )
    g = np.linspace(-9, 9, 160)
    xx, yy = np.meshgrid(g, g)
    grid = jnp.stack([xx.ravel(), yy.ravel()], 1)
    lp = jax.vmap(law.noised(process, t_end).log_prob)(grid).reshape(xx.shape)
    cs = ax2.contourf(xx, yy, np.maximum(np.asarray(lp), -12), levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax2, label="exact log-density")
    ax2.scatter(*np.asarray(x).T, s=8, c="w", edgecolors="k", linewidths=0.4)
    ax2.set(title="test points", aspect="equal")
    return save(fig, args.out)


if __name__ == "__main__":
    main()
