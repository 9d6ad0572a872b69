r"""Flow matching: regress a velocity on the conditional velocities of an interpolant.

For a pair $(X_0, Z)$ (data, noise) and $X_t = \alpha(t) X_0 + \sigma(t) Z$, the conditional
flow-matching loss (Lipman et al. 2023, "Flow Matching for Generative Modeling",
arXiv:2210.02747; Liu, Gong & Liu 2023, "Flow Straight and Fast", arXiv:2209.03003) is

$$L(v) = \mathbb E_{t}\, w\; \mathbb E\,\big|v(t, X_t) - (\dot\alpha X_0 + \dot\sigma Z)\big|^2 .$$

Its minimiser over all fields is the marginal velocity $E[\dot\alpha X_0 + \dot\sigma Z | X_t]$
(`jaxdiff.ExactVelocity`): the squared error splits into the distance to the marginal
velocity plus a term that does not depend on $v$, exactly as for denoising score matching.

**Couplings.** With independent $(X_0, Z)$ (`IndependentCoupling`) the marginal velocity
transports $N(0, I)$ to the data. Any coupling with the right marginals does too
(Tong et al. 2024, "Improving and Generalizing Flow-Based Generative Models with Minibatch
Optimal Transport", arXiv:2302.00482): `OTCoupling` re-pairs each minibatch by an entropic
optimal-transport plan between data and noise (solved with `ott-jax`'s Sinkhorn), which
makes the learned paths straighter. `PairedCoupling` takes fixed (data, noise) pairs, as
`reflow` builds them: integrating a trained flow from noise gives pairs whose straight
interpolation crosses less, and retraining on them straightens the flow (rectified flow,
Liu et al. 2023), so that one Euler step goes far.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .losses import AbstractLoss, AbstractTimeSampler, Scalar, UniformTime, _check_t_min, _example_keys
from .processes import AbstractProcess
from .scores import without_time_checks
from .velocity import alpha_dot, check_endpoints, sigma_dot, velocity_of

# ---------------------------------------------------------------------------------------
# Couplings of data and noise
# ---------------------------------------------------------------------------------------


class AbstractCoupling(eqx.Module):
    """A joint law of (data, noise) within a minibatch: `coupling(key, batch) -> (x0, z)`."""

    @abc.abstractmethod
    def __call__(self, key: PRNGKeyArray, batch: Array) -> tuple[Array, Array]:
        """The paired minibatch `(x0, z)`, both of shape `(n, *event)`."""


def _noise(key, x0):
    # example i's noise from fold_in(key, i): a split batch keeps every example's draw
    return jax.vmap(lambda k, x: jax.random.normal(k, x.shape, x.dtype))(_example_keys(key, x0.shape[0]), x0)


class IndependentCoupling(AbstractCoupling):
    """Data and noise independent: `z ~ N(0, I)` for each example."""

    def __call__(self, key, batch):
        return batch, _noise(key, batch)


class OTCoupling(AbstractCoupling):
    r"""Minibatch optimal-transport coupling (OT-CFM, Tong et al. 2024): solve the entropic
    OT problem between the minibatch's data and its noise for the squared Euclidean cost
    (ott-jax's Sinkhorn, cost scaled by its mean, regularisation `epsilon`), then give each
    data point a noise partner drawn from its row of the plan. Small `epsilon` approaches
    the exact (permutation) plan. The pairing carries no gradient.
    """

    epsilon: float = eqx.field(default=0.01, static=True)
    max_iterations: int = eqx.field(default=2000, static=True)

    def __init__(self, epsilon: float = 0.01, max_iterations: int = 2000):
        """**Arguments:** `epsilon > 0`: entropic regularisation relative to the mean cost;
        `max_iterations`: the cap on Sinkhorn iterations."""
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"`epsilon` must be a positive float, got {epsilon!r}")
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"`max_iterations` must be a positive integer, got {max_iterations!r}")
        self.epsilon = float(epsilon)
        self.max_iterations = max_iterations

    def plan(self, x0: Array, z: Array) -> Float[Array, "n n"]:
        """The entropic OT plan between the rows of `x0` and of `z` (uniform marginals)."""
        from ott.geometry import pointcloud
        from ott.solvers import linear

        n = x0.shape[0]
        geom = pointcloud.PointCloud(
            x0.reshape(n, -1), z.reshape(n, -1), epsilon=self.epsilon, scale_cost="mean"
        )
        return linear.solve(geom, max_iterations=self.max_iterations).matrix

    def __call__(self, key, batch):
        k_noise, k_pair = jax.random.split(key)
        z = _noise(k_noise, batch)
        pi = jax.lax.stop_gradient(self.plan(jax.lax.stop_gradient(batch), z))
        logits = jnp.log(jnp.maximum(pi, 0.0))
        j = jax.vmap(jax.random.categorical)(_example_keys(k_pair, batch.shape[0]), logits)
        return batch, z[j]


class PairedCoupling(AbstractCoupling):
    """Fixed pairs: the batch has shape `(n, 2, *event)`, `batch[:, 0]` the data end (`t = 0`)
    and `batch[:, 1]` the noise end (`t = T`), as `reflow` builds them."""

    def __call__(self, key, batch):
        if batch.ndim < 3 or batch.shape[1] != 2:
            raise ValueError(
                f"PairedCoupling needs pairs of shape (n, 2, *event) (data, noise), got {batch.shape}"
            )
        return batch[:, 0], batch[:, 1]


# ---------------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------------


class FlowMatchingLoss(AbstractLoss):
    r"""Conditional flow matching `E_t w |v(t, X_t) - (alpha_dot X_0 + sigma_dot Z)|^2` (module
    docstring), usable in `jd.train`.

    The model's velocity is `velocity_of(score, process)`: the network output for a
    `VelocityParam` network, the denoiser's or score's velocity for any other
    parametrisation, so any `NetworkScore` can be trained by it. `t` is drawn by
    `time_sampler` on `[t_min, T]` (uniform by default).
    """

    coupling: AbstractCoupling = IndependentCoupling()
    time_sampler: AbstractTimeSampler = UniformTime()
    t_min: Scalar = 1e-3

    def terms(self, score, process, x0, *, key):
        check_endpoints(process, "FlowMatchingLoss")
        t_min = _check_t_min(self.t_min, process)
        velocity = velocity_of(without_time_checks(score), process)  # t is drawn in [t_min, T]
        k_pair, k_time = jax.random.split(key)
        x0, z = self.coupling(k_pair, x0)

        def one(k, x, zi):
            t, w = self.time_sampler.sample(k, process, t_min)
            xt = process.alpha(t) * x + process.sigma(t) * zi
            target = alpha_dot(process, t) * x + sigma_dot(process, t) * zi
            return w * jnp.sum((velocity(t, xt) - target) ** 2)

        return jax.vmap(one)(_example_keys(k_time, x0.shape[0]), x0, z)


# ---------------------------------------------------------------------------------------
# Reflow
# ---------------------------------------------------------------------------------------


def flow_pairs(
    key: PRNGKeyArray,
    score: Callable,
    process: AbstractProcess,
    shape: tuple[int, ...],
    *,
    steps: int = 100,
    solver: diffrax.AbstractSolver = diffrax.Heun(),
    t_end: Scalar | None = None,
) -> Float[Array, "n 2 ..."]:
    """`(endpoint, noise)` pairs of a flow: noise `z ~ N(0, I)` at `T` carried to `t_end` by
    the flow's ODE (`ProbabilityFlow(solver)` on a uniform grid of `steps`); shape
    `(n, 2, *event)` with `[:, 0]` the endpoints and `[:, 1]` the noise."""
    from .sampling import ProbabilityFlow, UniformGrid, sample

    k_z, k_s = jax.random.split(key)
    z = process.prior_sample(k_z, shape)
    x1 = sample(
        k_s, score, process, shape, sampler=ProbabilityFlow(solver), steps=steps, grid=UniformGrid(),
        t_end=t_end, x_init=z,
    )  # fmt: skip
    return jnp.stack([x1, z.astype(x1.dtype)], axis=1)


def reflow(
    key: PRNGKeyArray,
    score: Callable,
    process: AbstractProcess,
    shape: tuple[int, ...],
    *,
    steps: int,
    batch_size: int,
    flow_steps: int = 100,
    solver: diffrax.AbstractSolver = diffrax.Heun(),
    t_end: Scalar | None = None,
    optimizer: optax.GradientTransformation | None = None,
    t_min: Scalar = 1e-3,
    return_pairs: bool = False,
    **train_kwargs,
):
    """One round of rectified flow (Liu et al. 2023): draw `shape[0]` noise samples, carry
    them to data with the trained flow `score` (`flow_pairs`), and retrain `score`, starting
    from its current weights, by flow matching on those fixed pairs (`PairedCoupling`).

    **Arguments:** `key`; `score`, the trained flow (a `NetworkScore`, e.g. with
    `VelocityParam`); `process`; `shape = (n_pairs, *event)`; `steps`, `batch_size`,
    `optimizer` (default `optax.adam(1e-3)`) and `train_kwargs`: passed to `jd.train`;
    `flow_steps`, `solver`, `t_end`: how the pairs are integrated; `t_min`: the loss's
    smallest time; `return_pairs`: also return the pairs.

    **Returns:** the retrained score (and the pairs).
    """
    from .training import train

    k_pairs, k_train = jax.random.split(key)
    pairs = flow_pairs(k_pairs, score, process, shape, steps=flow_steps, solver=solver, t_end=t_end)
    loss = FlowMatchingLoss(coupling=PairedCoupling(), t_min=t_min)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    new = train(
        score, process, pairs, key=k_train, steps=steps, batch_size=batch_size, loss=loss,
        optimizer=optimizer, **train_kwargs,
    )  # fmt: skip
    return (new, pairs) if return_pairs else new
