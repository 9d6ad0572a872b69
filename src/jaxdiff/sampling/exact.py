r"""The exact ancestral sampler: no discretisation error on any grid.

For an exact law of $X_0$ (point cloud, Gaussian mixture, Gaussian) the reverse transition
of the forward process is known:
$p(x_s | x_t) = \int p(x_s | x_t, x_0)\, p(x_0 | x_t)\, dx_0$. One step therefore draws

1. $X_0 \sim p(x_0 | X_t = x_t)$ (`law.posterior_sample_at`, streamed for point clouds),
2. $X_s \sim N(c_t x_t + c_0 X_0, \mathrm{std}^2 I)$, the Gaussian bridge of `bridge.py`,

and, started from the exact marginal at `ts[0]`, the states at every grid time have exactly
the forward marginals $p_{t_k}$ whatever the number of steps. It is the ground truth every
other sampler is measured against; it ignores the score.
"""

from __future__ import annotations

import jax
from jaxtyping import PRNGKeyArray

from ..distributions import AbstractLaw
from .base import AbstractSampler, scan_steps
from .bridge import bridge_coefficients


class ExactSampler(AbstractSampler):
    """Exact reverse-time sampling of `law` (a `PointCloud`, `GaussianMixture` or `Gaussian`).

    Starts from the exact marginal at `ts[0]` (unless `x_init` is given: then it samples the
    exact reverse transitions from that start, e.g. to measure initialisation error alone).
    Zero score evaluations; runs through the same step loop (`scan_steps`) as the step samplers.
    """

    uses_score = False

    law: AbstractLaw

    def __init__(self, law: AbstractLaw):
        """**Arguments:** `law`: the exact law of `X_0`."""
        if not isinstance(law, AbstractLaw):
            raise ValueError(
                f"`law` must be a jaxdiff law (PointCloud, GaussianMixture, ...), got {type(law).__name__}"
            )
        self.law = law

    def nfe(self, steps):
        return 0

    # The exact marginal instead of the prior: no initialisation error either.
    def initial(self, key: PRNGKeyArray, process, ts, shape):
        self._check_event(shape[1:])
        return self.law.sample_at(key, shape[0], process.alpha(ts[0]), process.sigma(ts[0])).astype(ts.dtype)

    def integrate(self, key, score, process, ts, x, *, trajectory, adjoint):
        self._check_event(x.shape)  # at trace time
        return scan_steps(self, key, score, process, ts, x, trajectory=trajectory, adjoint=adjoint)

    def _check_event(self, event):
        if tuple(event) != (self.law.dim,):
            raise ValueError(
                f"`shape` must be (batch, {self.law.dim}) for the ExactSampler's law, "
                f"got event shape {tuple(event)}"
            )

    def init_state(self, score, process, ts, x):
        return None

    def step(self, key, score, process, t, s, x, state):
        k0, kz = jax.random.split(key)
        x0 = self.law.posterior_sample_at(k0, process.alpha(t), process.sigma(t), x)
        c_t, c_0, std = bridge_coefficients(process, t, s)
        return c_t * x + c_0 * x0 + std * jax.random.normal(kz, x.shape, x.dtype), state
