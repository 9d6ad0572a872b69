r"""The reverse-time SDE by Euler–Maruyama, in one `lax.scan`.

In reverse time $\tau = T - t$ the reverse SDE of `dX = f X dt + g dW` is
$dY = [-f Y + g^2 s(t, Y)]\,d\tau + g\,d\bar W_\tau$ (Anderson 1982, "Reverse-time diffusion
equation models"; Song et al. 2021, arXiv:2011.13456); its drift is
`jaxdiff.reverse_drift`. From `t` to `s < t`, `h = t - s`,

$$x_s = x_t + h\,[-f(t) x_t + g(t)^2 s(t, x_t)] + g(t)\sqrt h\, z_k, \qquad
z_k \sim N(0, I) \text{ from } \mathrm{fold\_in}(\mathrm{key}_i, k).$$

The noise of step `k` comes from the step index, so nothing is stored and nothing is
searched: the loop costs what a hand-written scan costs. The same SDE with a Diffrax solver
is `DiffraxReverseSDE` (`diffrax_sde.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..processes import reverse_drift
from .base import AbstractStepSampler


class ReverseSDE(AbstractStepSampler):
    r"""The reverse-time SDE $dY = [-f Y + g^2 s(t, Y)]\,d\tau + g\,d\bar W$ by
    Euler–Maruyama on the grid (one score evaluation per step).

    For a Diffrax solver on the same grid (Heun, ShARK, ...) use `DiffraxReverseSDE`.
    """

    def __init__(self, solver=None):
        """No arguments. (`solver=` moved to `DiffraxReverseSDE(solver)`.)"""
        if solver is not None:
            raise ValueError(
                "`ReverseSDE` is the Euler-Maruyama loop and takes no `solver`; for a Diffrax solver use "
                f"`DiffraxReverseSDE({type(solver).__name__}())`"
            )

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        return None

    def step(self, key, score, process, t, s, x, state):
        h = t - s
        z = jax.random.normal(key, x.shape, x.dtype)
        return x + h * reverse_drift(process, score, t, x) + jnp.sqrt(process.g2(t) * h) * z, state
