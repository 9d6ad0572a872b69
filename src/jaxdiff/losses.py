r"""Score-matching losses, their irreducible minimum, and the Fisher divergence.

With $X_t = \alpha X_0 + \sigma Z$, the denoising score-matching (DSM) loss of a score $s$ is

$$L(s) = \mathbb E_{t\sim\nu}\, w(t)\lambda(t)\, \mathbb E\,\big| s(t, X_t) + Z/\sigma \big|^2,$$

with a weighting $\lambda$ (`SigmaSquaredWeighting`: $\sigma^2$, Song et al.'s
noise-prediction loss; `LikelihoodWeighting`: $g^2$; `EDMWeighting`) and a time law $\nu$
given by a time sampler (`UniformTime` on $[t_{min}, T]$, `LogNormalTime`: EDM's
log-normal noise levels). A time sampler may draw from a proposal $q$ instead of $\nu$ and
return the importance factor $w = d\nu/dq$ (`LikelihoodImportanceTime`); otherwise $w = 1$.

Since $-Z/\sigma$ is the score of $X_t | X_0$, the loss splits into

$$L(s) = \mathbb E_t\, w\lambda\, \mathbb E|s - \nabla\log p_t|^2(X_t)
 \;+\; \underbrace{\mathbb E_t\, w\lambda\, \frac{\alpha^2}{\sigma^4}\,
 \mathbb E\,\mathrm{tr}\,\mathrm{Cov}(X_0 | X_t)}_{\text{irreducible minimum, } L(\nabla\log p_t)},$$

so for an exact law the loss minus its minimum (`dsm_minimum`) is the weighted Fisher
divergence to the exact score (`fisher_divergence`). `dsm_minimum` evaluates
$\mathrm{tr}\,\mathrm{Cov}(X_0 | X_t)$ in closed form from the law's posterior at the same
draws of $(t, X_t)$ as `dsm_loss` with the same key: the difference of the two is then a
low-variance estimate of the score error.

Sliced score matching (Song et al. 2019, variance-reduced form, scaled by 2) needs no
conditional score: $\mathbb E\,w\lambda\,[\,2 v^\top \nabla_x s\, v + |s|^2\,]$ with
$v \sim N(0, I)$, at $X_t$. It equals $L(s)$ minus a constant that does not depend on $s$
(namely $\mathbb E w\lambda(\alpha^2/\sigma^4\, \mathrm{E\,tr\,Cov} + |\nabla\log p_t|^2)$).

Every loss acts on a batch `x0` of shape `(n, *shape)`; example `i` draws its time and
noise from `fold_in(key, i)`, so a split of the batch (across devices, say) does not change
any example's randomness.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import as_float_array, check_time, error_if_not_finite
from .distributions import AbstractLaw, Posterior
from .processes import AbstractProcess
from .scores import without_time_checks

Scalar = Float[ArrayLike, ""]

# ---------------------------------------------------------------------------------------
# Weightings
# ---------------------------------------------------------------------------------------


class AbstractWeighting(eqx.Module):
    """A loss weighting `lambda(t)` applied to `|s(t, x_t) + z / sigma|^2`."""

    @abc.abstractmethod
    def __call__(self, process: AbstractProcess, t: Scalar) -> Float[Array, ""]:
        """The weight `lambda(t)`."""


class SigmaSquaredWeighting(AbstractWeighting):
    """`lambda = sigma^2`: the loss becomes `E|sigma s + z|^2`, noise prediction."""

    def __call__(self, process, t):
        return process.sigma2(t)


class LikelihoodWeighting(AbstractWeighting):
    """`lambda = g^2` (Song et al. 2021): with `nu` uniform on `[t_min, T]`,
    `(T - t_min) / 2` times the score-error part bounds `KL(p_0 | model)` up to the prior
    and stopping-time terms. Pair it with `LikelihoodImportanceTime` for low variance."""

    def __call__(self, process, t):
        return process.g2(t)


class EDMWeighting(AbstractWeighting):
    """EDM's weighting (Karras et al. 2022), `(sigma~^2 + sigma_d^2) / (sigma~ sigma_d)^2` on
    `|D - x0|^2`, written on the score: `lambda = sigma^2 (sigma~^2 + sigma_d^2) / sigma_d^2`
    with `sigma~ = sigma / alpha`. Pair it with `LogNormalTime`.

    `sigma_data`: the data's scale per coordinate; `None` (the default) is filled in by
    `jaxdiff.train` from the score's `EDMParam` or, failing that, from the data."""

    sigma_data: float | None = None

    def __call__(self, process, t):
        if self.sigma_data is None:
            raise ValueError(
                "`EDMWeighting(sigma_data=None)` is resolved by `jaxdiff.train`; elsewhere give the "
                "data's scale, e.g. EDMWeighting(sigma_data=0.5)"
            )
        st2 = jnp.exp(-process.log_snr(t))
        return process.sigma2(t) * (st2 + self.sigma_data**2) / self.sigma_data**2


# ---------------------------------------------------------------------------------------
# Time samplers
# ---------------------------------------------------------------------------------------


class AbstractTimeSampler(eqx.Module):
    """Draws the loss time `t` and its importance factor `w = d nu / d q` (1 if `q = nu`)."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, process: AbstractProcess, t_min: Scalar) -> tuple[Array, Array]:
        """One draw `(t, w)` with `t_min <= t <= T`."""


class UniformTime(AbstractTimeSampler):
    """`nu = q = ` uniform on `[t_min, T]`."""

    def sample(self, key, process, t_min):
        u = jax.random.uniform(key, (), dtype=jnp.result_type(float))
        return t_min + u * (process.T - t_min), jnp.ones((), u.dtype)


class LogNormalTime(AbstractTimeSampler):
    """EDM's training noise levels: `log sigma~ ~ N(p_mean, p_std^2)`, mapped to time through
    `t = t_from_log_snr(-2 log sigma~)` and clipped to `[t_min, T]`."""

    p_mean: float = -1.2
    p_std: float = 1.2

    def sample(self, key, process, t_min):
        log_st = self.p_mean + self.p_std * jax.random.normal(key, (), dtype=jnp.result_type(float))
        t = jnp.clip(process.t_from_log_snr(-2 * log_st), t_min, process.T)
        return t, jnp.ones((), t.dtype)


class LikelihoodImportanceTime(AbstractTimeSampler):
    r"""Importance sampling for `LikelihoodWeighting`, with `nu` uniform on `[t_min, T]`.

    Draws from $q(t) \propto g^2/\sigma^2 = -d\lambda_{snr}/dt$, i.e. the log-SNR uniform
    between its values at `T` and `t_min` (exact for every process, through
    `t_from_log_snr`), and returns $w = (1/(T - t_{min})) / q(t)$. Then $w g^2$ is
    proportional to $\sigma^2$: the likelihood loss gets the variance of the $\sigma^2$ one.
    """

    def sample(self, key, process, t_min):
        lo, hi = process.log_snr(process.T), process.log_snr(t_min)
        u = jax.random.uniform(key, (), dtype=jnp.result_type(lo))
        t = jnp.clip(process.t_from_log_snr(lo + u * (hi - lo)), t_min, process.T)
        q = process.g2(t) / process.sigma2(t) / (hi - lo)
        return t, 1.0 / ((process.T - t_min) * q)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _check_batch(name: str, x0) -> Array:
    x0 = as_float_array(name, x0)
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(f"`{name}` must be a batch of samples of shape (n, ...), n >= 1, got {x0.shape}")
    return x0


def _check_t_min(t_min, process: AbstractProcess, *, traced: bool = True):
    t_min = check_time("t_min", jnp.asarray(t_min), process.T, strictly_positive=True, strictly_below=True,
                       what="the smallest loss time", traced=traced)
    return jnp.asarray(t_min)


def _example_keys(key: PRNGKeyArray, n: int):
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def _noise_example(key, process, time_sampler, t_min, x0):
    """The draws shared by every loss for one example: `(t, w, z, x_t)`."""
    kt, kz = jax.random.split(key)
    t, w = time_sampler.sample(kt, process, t_min)
    z = jax.random.normal(kz, x0.shape, jnp.result_type(x0, t))
    xt = process.alpha(t) * x0 + process.sigma(t) * z
    return t, w, z, xt


def posterior_trace_cov(post: Posterior) -> Float[Array, ""]:
    """`tr Cov(X_0 | X_t = x)` of a posterior mixture, in closed form:
    `sum_k w_k (|m_k - m|^2 + tr S_k)` with `m = sum_k w_k m_k`."""
    w = post.weights
    m = w @ post.means
    between = w @ jnp.sum((post.means - m) ** 2, axis=-1)
    if post.scale is None:
        return between
    if post.scale.ndim == 1:
        return between + post.means.shape[-1] * (w @ post.scale**2)
    return between + w @ jnp.sum(post.scale**2, axis=(-2, -1))


@eqx.filter_jit
def _loss_terms(loss, score, process, x0, key):
    # one compiled call per loss configuration: eager vmaps of a network dispatch op by op
    return loss.terms(score, process, x0, key=key)


def _reduce(terms, reduce: bool, what: str):
    # a check of a computed value: on the device (eqx.error_if), no transfer to the host
    return _checked_mean(terms, f"{what}: NaN or inf") if reduce else terms


@eqx.filter_jit
def _checked_mean(terms, msg: str):
    return error_if_not_finite(jnp.mean(terms), msg)


# ---------------------------------------------------------------------------------------
# Losses as strategy objects (used by `train`) and as functions
# ---------------------------------------------------------------------------------------


class AbstractLoss(eqx.Module):
    """A Monte Carlo training loss over a batch `x0`: `loss(score, process, x0, key=key)`."""

    @abc.abstractmethod
    def terms(self, score: Callable, process: AbstractProcess, x0: Array, *, key: PRNGKeyArray
              ) -> Float[Array, " n"]:
        """Per-example terms, shape `(n,)`; example `i` uses `fold_in(key, i)`."""

    def __call__(self, score, process, x0, *, key):
        return jnp.mean(self.terms(score, process, x0, key=key))


class DSMLoss(AbstractLoss):
    """Denoising score matching `E w lambda |s(t, x_t) + z / sigma|^2` (module docstring)."""

    weighting: AbstractWeighting = SigmaSquaredWeighting()
    time_sampler: AbstractTimeSampler = UniformTime()
    t_min: Scalar = 1e-3

    def terms(self, score, process, x0, *, key):
        t_min = _check_t_min(self.t_min, process, traced=False)  # a traced t_min: checked by the caller, once
        score = without_time_checks(score)  # t is drawn in [t_min, T]

        def one(k, x):
            t, w, z, xt = _noise_example(k, process, self.time_sampler, t_min, x)
            r = score(t, xt) + z / process.sigma(t)
            return w * self.weighting(process, t) * jnp.sum(r**2)

        return jax.vmap(one)(_example_keys(key, x0.shape[0]), x0)


class SlicedScoreMatchingLoss(AbstractLoss):
    """Sliced score matching at `x_t`: `E w lambda [2 v^T (d s/dx) v + |s|^2]`, `v ~ N(0, I)`,
    averaged over `n_projections` directions (one Jacobian-vector product each)."""

    n_projections: int = eqx.field(default=1, static=True)
    weighting: AbstractWeighting = SigmaSquaredWeighting()
    time_sampler: AbstractTimeSampler = UniformTime()
    t_min: Scalar = 1e-3

    def terms(self, score, process, x0, *, key):
        t_min = _check_t_min(self.t_min, process, traced=False)  # a traced t_min: checked by the caller, once
        score = without_time_checks(score)  # t is drawn in [t_min, T]

        def one(k, x):
            k_noise, kv = jax.random.split(k)
            t, w, _, xt = _noise_example(k_noise, process, self.time_sampler, t_min, x)
            v = jax.random.normal(kv, (self.n_projections, *x.shape), xt.dtype)
            s_fn = lambda y: score(t, y)
            s = s_fn(xt)
            jv = jax.vmap(lambda vi: jax.jvp(s_fn, (xt,), (vi,))[1])(v)
            quad = jnp.mean(jnp.sum(v * jv, axis=tuple(range(1, v.ndim))))
            return w * self.weighting(process, t) * (2 * quad + jnp.sum(s**2))

        return jax.vmap(one)(_example_keys(key, x0.shape[0]), x0)


def dsm_loss(
    score: Callable,
    process: AbstractProcess,
    x0: Float[Array, "n ..."],
    *,
    key: PRNGKeyArray,
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampler: AbstractTimeSampler = UniformTime(),
    t_min: Scalar = 1e-3,
    reduce: bool = True,
) -> Float[Array, ""] | Float[Array, " n"]:
    """Monte Carlo DSM loss over the batch `x0` (module docstring).

    **Arguments:** `score`, any `score(t, x)` (exact or network); `process`; `x0`, data of
    shape `(n, *shape)`; `key`; `weighting`; `time_sampler`; `t_min`, the smallest loss
    time (`0 < t_min < T`); `reduce=False` returns the `n` per-example terms instead of
    their mean (their standard deviation over `sqrt(n)` is the Monte Carlo standard error).
    A NaN or inf loss raises (eagerly, or through `eqx.error_if` under `jit`).
    """
    x0 = _check_batch("x0", x0)
    _check_t_min(t_min, process)
    terms = _loss_terms(DSMLoss(weighting, time_sampler, t_min), score, process, x0, key)
    return _reduce(terms, reduce, "dsm_loss (the score returned NaN or inf)")


def sliced_score_matching_loss(
    score: Callable,
    process: AbstractProcess,
    x0: Float[Array, "n ..."],
    *,
    key: PRNGKeyArray,
    n_projections: int = 1,
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampler: AbstractTimeSampler = UniformTime(),
    t_min: Scalar = 1e-3,
    reduce: bool = True,
) -> Float[Array, ""] | Float[Array, " n"]:
    """Monte Carlo sliced score-matching loss over the batch `x0` (module docstring);
    arguments as for `dsm_loss`, plus `n_projections` random directions per example."""
    x0 = _check_batch("x0", x0)
    _check_t_min(t_min, process)
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"`n_projections` must be a positive integer, got {n_projections!r}")
    loss = SlicedScoreMatchingLoss(n_projections, weighting, time_sampler, t_min)
    terms = _loss_terms(loss, score, process, x0, key)
    return _reduce(terms, reduce, "sliced_score_matching_loss (the score returned NaN or inf)")


def dsm_minimum(
    law: AbstractLaw,
    process: AbstractProcess,
    x0: Float[Array, "n d"],
    *,
    key: PRNGKeyArray,
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampler: AbstractTimeSampler = UniformTime(),
    t_min: Scalar = 1e-3,
    reduce: bool = True,
) -> Float[Array, ""] | Float[Array, " n"]:
    r"""The irreducible minimum of the DSM loss for an exact `law` (the loss of its exact score):
    $\mathbb E_t\, w\lambda\,\alpha^2/\sigma^4\;\mathbb E\,\mathrm{tr\,Cov}(X_0 | X_t)$.

    The trace is exact (from `law.posterior_at`); the outer expectation is Monte Carlo over
    the same draws of `(t, x_t)` as `dsm_loss` with the same arguments, so `x0` should be
    samples of `law`. Per example, `dsm_loss(...) - dsm_minimum(...)` then has mean equal to
    the weighted squared score error and far less variance than either term.
    """
    if not isinstance(law, AbstractLaw):
        raise ValueError(f"`law` must be a jaxdiff law (PointCloud, ...), got {type(law).__name__}")
    x0 = _check_batch("x0", x0)
    if x0.shape[1:] != (law.dim,):
        raise ValueError(f"`x0` must have shape (n, {law.dim}) to match `law`, got {x0.shape}")
    t_min = _check_t_min(t_min, process)
    terms = _minimum_terms(law, process, x0, key, weighting, time_sampler, t_min)
    return _reduce(terms, reduce, "dsm_minimum")


@eqx.filter_jit
def _minimum_terms(law, process, x0, key, weighting, time_sampler, t_min):
    def one(k, x):
        t, w, _, xt = _noise_example(k, process, time_sampler, t_min, x)
        alpha, sigma2 = process.alpha(t), process.sigma2(t)
        tr = posterior_trace_cov(law.posterior_at(alpha, jnp.sqrt(sigma2), xt))
        return w * weighting(process, t) * alpha**2 / sigma2**2 * tr

    return jax.vmap(one)(_example_keys(key, x0.shape[0]), x0)


def fisher_divergence(
    score: Callable,
    exact_score: Callable,
    process: AbstractProcess,
    samples_or_law: Float[Array, "n ..."] | AbstractLaw,
    *,
    key: PRNGKeyArray,
    n: int = 1024,
    t: Scalar | None = None,
    weighting: AbstractWeighting = SigmaSquaredWeighting(),
    time_sampler: AbstractTimeSampler = UniformTime(),
    t_min: Scalar = 1e-3,
    reduce: bool = True,
) -> Float[Array, ""] | Float[Array, " n"]:
    r"""Weighted Fisher divergence $\mathbb E_t\, w\lambda\, \mathbb E|s - s^*|^2(t, X_t)$ between
    `score` and `exact_score` (any two `score(t, x)` callables).

    `samples_or_law` gives `X_0`: a batch of data `(n, *shape)`, or an exact law from which
    `n` samples are drawn. With `t` given, the time is fixed and the result is the plain
    $\mathbb E_{X_t}|s - s^*|^2$ (no weighting). With the defaults, it is the expected
    `dsm_loss` minus `dsm_minimum`.
    """
    k_data, k_loss = jax.random.split(key)
    if isinstance(samples_or_law, AbstractLaw):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be a positive integer number of samples, got {n!r}")
        x0 = samples_or_law.sample(k_data, n)
    else:
        x0 = _check_batch("samples_or_law", samples_or_law)

    if t is not None:
        t = check_time("t", t, process.T, strictly_positive=True, what="scores are singular at t = 0")
        t = jnp.asarray(t)
    else:
        t_min = _check_t_min(t_min, process)
    terms = _fisher_terms(score, exact_score, process, x0, k_loss, t, weighting, time_sampler, t_min)
    return _reduce(terms, reduce, "fisher_divergence (a score returned NaN or inf)")


@eqx.filter_jit
def _fisher_terms(score, exact_score, process, x0, key, t, weighting, time_sampler, t_min):
    # t was checked by the caller, or is drawn in [t_min, T]
    score, exact_score = without_time_checks(score), without_time_checks(exact_score)
    if t is not None:

        def one(k, x):
            xt = process.sample_marginal(k, t, x)
            return jnp.sum((score(t, xt) - exact_score(t, xt)) ** 2)
    else:

        def one(k, x):
            tt, w, _, xt = _noise_example(k, process, time_sampler, t_min, x)
            return w * weighting(process, tt) * jnp.sum((score(tt, xt) - exact_score(tt, xt)) ** 2)

    return jax.vmap(one)(_example_keys(key, x0.shape[0]), x0)
