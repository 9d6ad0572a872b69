r"""Scores: anything callable as `score(t, x)` on one sample.

`ExactScore(process, law)` is the score of the exact noised law; learned scores
(`NetworkScore`, in `jaxdiff.network_score`) share the same interface, so every sampler,
loss and PDE solver takes either. Tweedie's formula links a score to its denoiser:
$E[X_0 | X_t = x] = (x + \sigma^2 s(t, x)) / \alpha$.
"""


import abc

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_sample_shape, check_time, is_concrete
from .distributions import AbstractLaw
from .processes import AbstractProcess

Scalar = Float[ArrayLike, ""]


class AbstractScore(eqx.Module):
    """A score function `s(t, x) ~ grad_x log p_t(x)` for a forward `process`."""

    process: eqx.AbstractVar[AbstractProcess]

    @abc.abstractmethod
    def __call__(self, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The score at time `t` of one sample `x` (batch with `jax.vmap`)."""

    @abc.abstractmethod
    def denoise(self, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Tweedie's denoiser `E[X_0 | X_t = x]`; `tweedie_denoise(self, t, x)` unless the score
        knows better (closed form, x0-parametrised network)."""

    @abc.abstractmethod
    def without_time_checks(self) -> "AbstractScore":
        """This score with its run-time checks of a traced `t` (`0 < t <= T`, finite) turned
        off; concrete times and shapes are still checked. (`self` for scores without them.)

        Each run-time check is an `eqx.error_if`, a conditional that XLA cannot fuse across.
        Losses, samplers and the likelihood call their scores through this, because the
        times they pass are valid by construction (a loss draws `t` in `[t_min, T]`; a
        sampler's grid is checked once).
        """


def tweedie_denoise(score: AbstractScore, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """Tweedie's formula `(x + sigma(t)^2 score(t, x)) / alpha(t)` for a score of `score.process`."""
    p = score.process
    return (x + p.sigma2(t) * score(t, x)) / p.alpha(t)


def _same_process(p: AbstractProcess, q: AbstractProcess) -> bool:
    """Same class and equal parameters (a Python float equals the same value as an array)."""
    if type(p) is not type(q) or jax.tree.structure(p) != jax.tree.structure(q):
        return False
    pairs = zip(jax.tree.leaves(p), jax.tree.leaves(q))
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)


def check_score_process(score, process: AbstractProcess) -> None:
    """Refuse a jaxdiff score whose `process` differs from `process` (an argument check)."""
    if not isinstance(score, AbstractScore):
        return
    if type(score.process) is type(process) and not is_concrete(score.process, process):
        return  # traced parameters (the score under jit): nothing to compare eagerly
    if not _same_process(score.process, process):
        raise ValueError(
            f"`process` ({process!r}) differs from `score.process` ({score.process!r}): a score belongs "
            "to the process it was built or trained with; pass that process"
        )


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

    def __init__(self, process: AbstractProcess, law: AbstractLaw, *, check_times: bool = True):
        """**Arguments:** `process`, the forward process; `law`, the exact law of `X_0`;
        `check_times`: check a traced `t` at run time (see `without_time_checks`)."""
        if not isinstance(process, AbstractProcess):
            raise ValueError(
                f"`process` must be a jaxdiff process (OU, VP, ...), got {type(process).__name__}"
            )
        if not isinstance(law, AbstractLaw):
            raise ValueError(f"`law` must be a jaxdiff law (PointCloud, ...), got {type(law).__name__}")
        self.process = process
        self.law = law
        self.check_times = bool(check_times)

    def without_time_checks(self) -> "ExactScore":
        return ExactScore(self.process, self.law, check_times=False)

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
