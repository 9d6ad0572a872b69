"""Gradient through a sampler: tune the time grid and the stopping time of a 6-step sampler.

Samplers are differentiable, so a sampler's own parameters can be fitted by gradient descent.
Here a probability-flow sampler with 6 Euler steps on Karras et al.'s grid `EDMGrid(rho)`
(VP process, exact score of a ring of Gaussians) is compared pathwise with an accurate solve of
the same ODE from the same prior draws; Adam tunes `rho` and `t_end` to lower the mean squared
difference. Left: the error during descent; right: the samples before and after.

    python examples/tune_sampler.py [--tiny] [--iters 60] [--out examples-out/tune_sampler.png]
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import figure, parse, save

import jaxdiff as jd


def main(argv=None) -> str:
    args = parse(
        __doc__, "tune_sampler.png", argv, lambda ap: ap.add_argument("--iters", type=int, default=60)
    )
    n, iters = (32, 3) if args.tiny else (512, args.iters)
    angles = 2 * jnp.pi * jnp.arange(6) / 6
    law = jd.GaussianMixture(2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1), 0.15)
    process = jd.VP()
    score = jd.ExactScore(process, law)
    T = process.T
    x_T = process.prior_sample(jax.random.PRNGKey(0), (n, 2))
    accurate = jd.ProbabilityFlow(diffrax.Tsit5(), diffrax.PIDController(rtol=1e-6, atol=1e-6))
    target = jd.sample(
        jax.random.PRNGKey(0),
        score,
        process,
        (n, 2),
        sampler=accurate,
        steps=8,
        t_end=jnp.array(1e-5),
        x_init=x_T,
    )
    few_step = jd.ProbabilityFlow(diffrax.Euler())

    def run(theta):  # theta = (log rho, logit(t_end / T)): unconstrained
        rho, t_end = jnp.exp(theta[0]), T * jax.nn.sigmoid(theta[1])
        return jd.sample(
            jax.random.PRNGKey(0),
            score,
            process,
            (n, 2),
            sampler=few_step,
            steps=6,
            t_end=t_end,
            grid=jd.EDMGrid(rho),
            x_init=x_T,
        )

    loss = eqx.filter_jit(jax.value_and_grad(lambda th: jnp.mean(jnp.sum((run(th) - target) ** 2, 1))))
    theta = theta0 = jnp.array([jnp.log(7.0), jnp.log(1e-3 / (1 - 1e-3))])  # the usual defaults
    opt = optax.adam(0.08)
    state = opt.init(theta)
    history = []
    for _ in range(iters):
        value, grad = loss(theta)
        history.append(float(value))
        updates, state = opt.update(grad, state, theta)
        theta = optax.apply_updates(theta, updates)
    history.append(float(loss(theta)[0]))

    fig, (ax1, ax2) = figure(1, 2, figsize=(10, 4.2))
    ax1.semilogy(history)
    ax1.set(
        xlabel="Adam iteration",
        ylabel="mean |x - x_accurate|^2",
        title=f"rho {7.0:.2g} -> {float(jnp.exp(theta[0])):.3g}, "
        f"t_end/T 1e-3 -> {float(jax.nn.sigmoid(theta[1])):.2g}",
    )
    for th, label in ((theta0, "defaults"), (theta, "tuned")):
        ax2.scatter(*np.asarray(run(th)).T, s=3, label=label)
    ax2.scatter(*np.asarray(target).T, s=3, c="k", alpha=0.3, label="accurate ODE")
    ax2.set(title="6-step samples", aspect="equal")
    ax2.legend(fontsize=8)
    return save(fig, args.out)


if __name__ == "__main__":
    main()
