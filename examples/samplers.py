"""Sample a toy law with every sampler and compare with the exact law.

A ring of eight Gaussians under the VP process has an exact score, so every error you see is the
sampler's own (discretisation and stopping time). Each panel shows one sampler's samples and
their sliced Wasserstein-2 distance to samples of the exact law; `ExactSampler` is the ground
truth (no discretisation error), so its distance is the two-sample noise floor.

    python examples/samplers.py [--tiny] [--steps 20] [--out examples-out/samplers.png]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from _common import figure, parse, save  # examples/ is on the path when a script runs

import jaxdiff as jd


def main(argv=None) -> str:
    args = parse(__doc__, "samplers.png", argv, lambda ap: ap.add_argument("--steps", type=int, default=20))
    n, steps = (64, 4) if args.tiny else (2000, args.steps)
    angles = 2 * jnp.pi * jnp.arange(8) / 8
    law = jd.GaussianMixture(2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1), 0.15)
    process = jd.VP()
    score = jd.ExactScore(process, law)
    samplers = {
        "ReverseSDE": jd.ReverseSDE(),
        "ProbabilityFlow": jd.ProbabilityFlow(),
        "PredictorCorrector": jd.PredictorCorrector(),
        "DDPM": jd.DDPM(),
        "DDIM": jd.DDIM(),
        "EDMHeun": jd.EDMHeun(),
        "DPMSolverPP": jd.DPMSolverPP(),
        "ExactSampler": jd.ExactSampler(law),
    }
    key = jax.random.PRNGKey(0)
    exact = law.sample(jax.random.PRNGKey(1), n)
    fig, axes = figure(2, 4, figsize=(12, 6.2), sharex=True, sharey=True)
    for ax, (name, sampler) in zip(axes.flat, samplers.items()):
        x = jd.sample(key, score, process, (n, 2), sampler=sampler, steps=steps)
        sw = jd.metrics.sliced_wasserstein(x, exact, key=key)
        ax.scatter(*exact.T, s=2, c="0.8")
        ax.scatter(*x.T, s=2)
        ax.set_title(f"{name}\nNFE {sampler.nfe(steps)}, SW2 {float(sw):.3f}", fontsize=9)
        ax.set_aspect("equal")
    fig.suptitle(f"{steps} steps from T to t_end = 1e-3 T (grey: exact law)")
    return save(fig, args.out)


if __name__ == "__main__":
    main()
