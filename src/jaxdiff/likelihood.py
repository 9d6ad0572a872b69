r"""Log-likelihood through the probability-flow ODE.

The probability-flow ODE $\dot x = v(t, x) = f(t)\,x - \tfrac12 g(t)^2 s(t, x)$ carries the
marginals of the forward process (exactly, when $s$ is the exact score). Along its
solution the log-density obeys $\frac{d}{dt}\log p_t(x_t) = -\nabla\!\cdot v(t, x_t)$, so

$$\log p_{t_{end}}(x) = \log p_T(x_T) + \int_{t_{end}}^{T} \nabla\!\cdot v(t, x_t)\,dt,
\qquad x_{t_{end}} = x,$$

solved forward in time with Diffrax on the augmented state $(x_t, \int \nabla\!\cdot v)$
(Chen et al. 2018; Song et al. 2021). $\log p_T$ is the process's prior by default.
The divergence is exact (`ExactDivergence`: the trace of the Jacobian, $d$ forward-mode
passes; for small $d$) or Hutchinson's estimate
$\nabla\!\cdot v \approx \frac1m\sum_j \epsilon_j^\top (\partial v/\partial x)\,\epsilon_j$
(`Hutchinson`: $m$ Rademacher or Gaussian probes drawn once from `key` and held fixed along
the path, so the ODE stays deterministic and the estimate unbiased).

Everything is one jitted Diffrax solve: `jax.grad` works with respect to `x`, `t_end` and
the score's weights (discretise-then-optimise through `RecursiveCheckpointAdjoint`).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import as_float_array, check_finite, check_time, error_if_not_finite
from .processes import AbstractProcess, default_t_end, reverse_drift
from .scores import check_score_process, without_time_checks


class AbstractDivergence(eqx.Module):
    """How `div v` is computed along the probability-flow ODE."""

    @abc.abstractmethod
    def probes(self, key: PRNGKeyArray | None, shape: tuple[int, ...], dtype) -> Array | None:
        """Random probes drawn once per solve (`None` when none are needed)."""

    @abc.abstractmethod
    def __call__(self, fn: Callable[[Array], Array], x: Array, probes: Array | None) -> tuple[Array, Array]:
        """`(fn(x), div fn(x))` (or an estimate of the divergence)."""


class ExactDivergence(AbstractDivergence):
    """The trace of the Jacobian, by forward mode (`d` Jacobian-vector products)."""

    def probes(self, key, shape, dtype):
        return None

    def __call__(self, fn, x, probes):
        flat = lambda y: fn(y.reshape(x.shape)).reshape(-1)
        y = x.reshape(-1)
        eye = jnp.eye(y.size, dtype=y.dtype)
        out, jac_cols = jax.vmap(lambda e: jax.jvp(flat, (y,), (e,)), out_axes=(None, 0))(eye)
        return out.reshape(x.shape), jnp.trace(jac_cols)


class Hutchinson(AbstractDivergence):
    """Hutchinson's estimator with `n_probes` fixed probes (Rademacher, or Gaussian)."""

    n_probes: int = eqx.field(default=1, static=True)
    rademacher: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not isinstance(self.n_probes, int) or self.n_probes < 1:
            raise ValueError(f"`n_probes` must be a positive integer, got {self.n_probes!r}")

    def probes(self, key, shape, dtype):
        if key is None:
            raise ValueError("`key` is required by the Hutchinson divergence estimator (it draws the probes)")
        if self.rademacher:
            return jax.random.rademacher(key, (self.n_probes, *shape), dtype)
        return jax.random.normal(key, (self.n_probes, *shape), dtype)

    def __call__(self, fn, x, probes):
        out, vjp = jax.vjp(fn, x)
        # eps^T J eps through reverse mode: one pass per probe, each sharing the forward pass
        quad = jax.vmap(lambda e: jnp.sum(vjp(e)[0] * e))(probes)
        return out, jnp.mean(quad)


@eqx.filter_jit
def _solve(score, process, x, t_end, probes, *, divergence, solver, stepsize_controller, dt0, max_steps,
           adjoint, prior_log_prob):
    score = without_time_checks(score)  # t runs over [t_end, T], checked by the caller

    # The score and process travel as `args`, not closed over: a continuous adjoint
    # (diffrax.BacksolveAdjoint) differentiates with respect to `args` and the state only.
    def field(t, y, args):
        score, process = args
        xt, _ = y
        v = lambda z: -reverse_drift(process, score, t, z, noise=0.0)  # the flow in ordinary time
        dx, div = divergence(v, xt, probes)
        return dx, div

    y0 = (x, jnp.zeros((), x.dtype))
    sol = diffrax.diffeqsolve(diffrax.ODETerm(field), solver, t_end, process.T, dt0, y0,
                              args=(score, process), stepsize_controller=stepsize_controller,
                              max_steps=max_steps, adjoint=adjoint)
    x_T, integral = jax.tree.map(lambda a: a[-1], sol.ys)
    prior = process.prior_log_prob(x_T) if prior_log_prob is None else prior_log_prob(x_T)
    return error_if_not_finite(prior + integral, "log_likelihood: NaN or inf (from the score along the ODE)")


def log_likelihood(
    score: Callable,
    process: AbstractProcess,
    x: Float[Array, "*shape"],
    *,
    t_end: Float[ArrayLike, ""] | None = None,
    divergence: AbstractDivergence = ExactDivergence(),
    key: PRNGKeyArray | None = None,
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(rtol=1e-5, atol=1e-5),
    dt0: Float[ArrayLike, ""] | None = None,
    max_steps: int = 4096,
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
    prior_log_prob: Callable | None = None,
) -> Float[Array, ""]:
    """`log p_{t_end}(x)` in nats (summed over all entries of one sample `x`) of the model
    defined by `score` through the probability-flow ODE (module docstring).

    **Arguments:**

    - `score`: any `score(t, x)`; `process`: the forward process; `x`: one sample (batch
      with `jax.vmap`).
    - `t_end`: the time at which the density is evaluated (`0 < t_end < T`, default
      `1e-3 * T` as in `sample`); an array, so sweeping it does not recompile.
    - `divergence`: `ExactDivergence()` or `Hutchinson(n_probes)`; `key` draws Hutchinson's probes.
    - `solver`, `stepsize_controller`, `dt0`, `max_steps`, `adjoint`: passed to
      `diffrax.diffeqsolve` (defaults: Tsit5 with rtol = atol = 1e-5). The default adjoint
      differentiates the solver's steps with recursive checkpointing (memory logarithmic in
      the number of steps); `diffrax.BacksolveAdjoint()` solves the adjoint ODE backwards
      instead (constant memory, gradients accurate to the solver's tolerance).
    - `prior_log_prob`: the log-density at `T` (default: the process's prior), e.g. the exact
      `law.noised(process, process.T).log_prob` to remove the initialisation error.
    """
    x = check_finite("x", as_float_array("x", x))  # a NaN x would surface as "max_steps reached"
    check_score_process(score, process)
    t_end = default_t_end(process) if t_end is None else t_end
    t_end = check_time("t_end", jnp.asarray(t_end, x.dtype), process.T, strictly_positive=True,
                       strictly_below=True, what="the score is singular at t = 0")
    if not isinstance(divergence, AbstractDivergence):
        raise ValueError(f"`divergence` must be ExactDivergence() or Hutchinson(...), got {divergence!r}")
    probes = divergence.probes(key, x.shape, x.dtype)
    out = _solve(score, process, x, t_end, probes, divergence=divergence, solver=solver,
                 stepsize_controller=stepsize_controller, dt0=dt0, max_steps=max_steps, adjoint=adjoint,
                 prior_log_prob=prior_log_prob)
    return out
