r"""Scores: anything callable as `score(t, x)` on one sample.

`ExactScore(process, law)` is the score of the exact noised law; learned scores
(`NetworkScore`, in `jaxdiff.network_score`) share the same interface, so every sampler,
loss and PDE solver takes either. Tweedie's formula links a score to its denoiser:
$E[X_0 | X_t = x] = (x + \sigma^2 s(t, x)) / \alpha$.
"""

from __future__ import annotations

import abc
import copy

import equinox as eqx
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_sample_shape, check_time
from .distributions import AbstractLaw
from .processes import AbstractProcess

Scalar = Float[ArrayLike, ""]


class AbstractScore(eqx.Module):
    """A score function `s(t, x) ~ grad_x log p_t(x)` for a forward `process`."""

    process: eqx.AbstractVar[AbstractProcess]

    @abc.abstractmethod
    def __call__(self, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The score at time `t` of one sample `x` (batch with `jax.vmap`)."""

    def denoise(self, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Tweedie's denoiser `(x + sigma(t)^2 s(t, x)) / alpha(t)`."""
        p = self.process
        return (x + p.sigma2(t) * self(t, x)) / p.alpha(t)

    def without_time_checks(self) -> AbstractScore:
        """This score with its run-time checks of a traced `t` (`0 < t <= T`, finite) turned
        off; concrete times and shapes are still checked.

        Each run-time check is an `eqx.error_if`: a conditional that XLA cannot fuse across,
        7% of a U-Net training step (`benchmarks/bench_training.py`). Losses, samplers and the
        likelihood call their scores through this, because the times they pass are valid by
        construction (a loss draws `t` in `[t_min, T]`; a sampler's grid is checked once).
        Scores without such checks return themselves.
        """
        return self


def _unchecked_copy(score):
    """A copy of `score` whose static `check_times` field is False."""
    new = copy.copy(score)
    object.__setattr__(new, "check_times", False)
    return new


def without_time_checks(score):
    """`score.without_time_checks()` for a jaxdiff score; any other callable as it is."""
    return score.without_time_checks() if isinstance(score, AbstractScore) else score


class ExactScore(AbstractScore):
    """The exact score of `law` noised by `process`: `grad_x log p_t(x)` in closed form.

    For a `PointCloud` this is the (streamed) empirical score, the unique minimiser of the
    denoising score-matching loss; it memorises the training points.
    """

    process: AbstractProcess
    law: AbstractLaw
    check_times: bool = eqx.field(static=True)

    def __init__(self, process: AbstractProcess, law: AbstractLaw):
        """**Arguments:** `process`, the forward process; `law`, the exact law of `X_0`."""
        if not isinstance(process, AbstractProcess):
            raise ValueError(
                f"`process` must be a jaxdiff process (OU, VP, ...), got {type(process).__name__}"
            )
        if not isinstance(law, AbstractLaw):
            raise ValueError(f"`law` must be a jaxdiff law (PointCloud, ...), got {type(law).__name__}")
        self.process = process
        self.law = law
        self.check_times = True

    def without_time_checks(self) -> ExactScore:
        return _unchecked_copy(self)

    def _at(self, t, x):
        t = check_time(
            "t",
            t,
            self.process.T,
            strictly_positive=self.law.singular,
            what=f"the score of a {type(self.law).__name__} is singular at t = 0",
            traced=self.check_times,
        )
        check_sample_shape("x", x, self.law.dim)
        return self.process.alpha(t), self.process.sigma(t)

    def __call__(self, t, x):
        alpha, sigma = self._at(t, x)
        return self.law.score_at(alpha, sigma, x)

    def denoise(self, t, x):
        alpha, sigma = self._at(t, x)
        return self.law.denoise_at(alpha, sigma, x)

    def log_prob(self, t: Scalar, x: Float[Array, " d"]) -> Float[Array, ""]:
        """The exact log-density `log p_t(x)`."""
        alpha, sigma = self._at(t, x)
        return self.law.log_prob_at(alpha, sigma, x)
