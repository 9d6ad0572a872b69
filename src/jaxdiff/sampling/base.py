r"""The sampler interface: what a reverse-time sampler is, and the step loop.

Reverse-time simulation runs from `T` down to a stopping time `t_end > 0` on a descending grid
`ts` (`ts[0] = T`, `ts[-1] = t_end`). Samplers are written for **one sample** of any event
shape; `jaxdiff.sample` (in `entry.py`) draws the initial state of the batch and `jax.vmap`s
the sampler over the rows. Row `i` uses the key `fold_in(k_noise, i)` and, within it, step
`k` uses `fold_in(fold_in(k_noise, i), k)`: a sample's noise depends on its row and step
only, so the first rows of a large batch equal a small batch.

The hierarchy (abstract classes carry the hooks, final classes implement them):

* `AbstractSampler`: `integrate` (one sample down the grid), `nfe`, `initial` (the batch's
  state at `ts[0]`) and the class flag `uses_score`.
* `AbstractScoreSampler`: samplers that follow a score from the prior (`uses_score = True`,
  `initial` draws the prior). `ProbabilityFlow`, `DiffraxReverseSDE`, and:
* `AbstractStepSampler`: a one-step map `x_t -> x_s` on the grid (`init_state`, `step`),
  iterated by `scan_steps` in one `lax.scan`: Euler–Maruyama (`ReverseSDE`), DDPM, DDIM,
  EDM's Heun, DPM-Solver++, predictor–corrector.

A sampler that is not score-driven (`ExactSampler`) derives from `AbstractSampler` directly
and gives its own `initial` and `uses_score = False`. This module imports none of them.
"""


import abc
from collections.abc import Callable
from typing import Any, Protocol

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from ..processes import AbstractProcess
from ..scores import AbstractScore
from .adjoint import AbstractAdjoint, BackpropAdjoint, step_adjoint

Scalar = Float[ArrayLike, ""]
Score = Callable[[Any, Any], Any]


def denoiser(score: Score, process: AbstractProcess) -> Callable:
    r"""Tweedie's denoiser $D(t, x) = E[X_0 | X_t = x]$ of `score`.

    A jaxdiff score (`AbstractScore`) supplies its own `denoise` (exact for `ExactScore`,
    direct for an x0-parametrised network); any other callable goes through
    $D = (x + \sigma^2 s(t, x)) / \alpha$.
    """
    if isinstance(score, AbstractScore):
        return score.denoise

    def D(t, x):
        return (x + process.sigma2(t) * score(t, x)) / process.alpha(t)

    return D


class AbstractSampler(eqx.Module):
    """A reverse-time sampler: maps a state at `ts[0]` to a state at `ts[-1]` for one sample."""

    # Whether the sampler calls the score (`sample` then checks the score's signature).
    uses_score: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def integrate(
        self,
        key: PRNGKeyArray,
        score: Score,
        process: AbstractProcess,
        ts: Float[Array, " times"],
        x: Float[Array, "*event"],
        *,
        trajectory: bool,
        adjoint: AbstractAdjoint | diffrax.AbstractAdjoint,
    ) -> Float[Array, "*event"] | Float[Array, " times *event"]:
        """Run one sample `x` (the state at `ts[0]`) down the grid `ts`.

        **Arguments:** `key`, this sample's own key (step `k` may use `fold_in(key, k)`);
        `score(t, x)` on one sample; `process`; `ts`, descending times; `x`, the state at
        `ts[0]`; `trajectory`: return the states at every `ts` (first one `x`) instead of
        the last one; `adjoint`: how reverse-mode gradients flow through the loop (a jaxdiff
        adjoint; a Diffrax-based sampler also takes a Diffrax adjoint).
        """

    @abc.abstractmethod
    def nfe(self, steps: int) -> int | None:
        """Score (or denoiser) evaluations per sample for `steps` grid steps (`None` when
        it is not known in advance, e.g. adaptive step sizes)."""

    @abc.abstractmethod
    def initial(
        self, key: PRNGKeyArray, process: AbstractProcess, ts: Float[Array, " times"], shape: tuple[int, ...]
    ) -> Float[Array, " batch *event"]:
        """The batch's state at `ts[0]` (`shape` is batch-first); row `i` from `fold_in(key, i)`."""


class AbstractScoreSampler(AbstractSampler):
    """A sampler that follows a score from the prior `N(0, prior_std^2 I)` at `ts[0]`."""

    uses_score = True

    def initial(self, key, process, ts, shape):
        return process.prior_sample(key, shape, dtype=ts.dtype)


class AbstractStepSampler(AbstractScoreSampler):
    """A score sampler given by a one-step map from `t` to `s < t` on the grid, iterated with
    `lax.scan` (`scan_steps`). Step `k` receives the key `fold_in(key, k)`."""

    @abc.abstractmethod
    def init_state(self, score: Score, process: AbstractProcess, ts: Float[Array, " times"], x) -> PyTree:
        """Auxiliary state carried between steps (multistep history; `None` if unused)."""

    @abc.abstractmethod
    def step(
        self,
        key: PRNGKeyArray,
        score: Score,
        process: AbstractProcess,
        t: Scalar,
        s: Scalar,
        x,
        state: PyTree,
    ) -> tuple[Float[Array, "*event"], PyTree]:
        """One step of one sample from time `t` to the next grid time `s < t`."""

    def integrate(self, key, score, process, ts, x, *, trajectory, adjoint):
        return scan_steps(self, key, score, process, ts, x, trajectory=trajectory, adjoint=adjoint)


class StepMap(Protocol):
    """What `scan_steps` needs: `init_state` and `step` as in `AbstractStepSampler`."""

    def init_state(self, score, process, ts, x) -> PyTree: ...

    def step(self, key, score, process, t, s, x, state) -> tuple[Array, PyTree]: ...


def scan_steps(sampler: StepMap, key, score, process, ts, x, *, trajectory: bool,
               adjoint: AbstractAdjoint = BackpropAdjoint()):
    """Iterate `sampler.step` over the grid `ts` with one `lax.scan` (one sample).

    The one step loop of the package: every step sampler (and `ExactSampler`) runs through
    it. `adjoint` sets how its reverse-mode derivative is stored (`BackpropAdjoint`: every
    step; `CheckpointAdjoint`: a few checkpoints, recomputing the rest).
    """
    adjoint = step_adjoint(adjoint, type(sampler).__name__)
    K = ts.shape[0] - 1
    state = sampler.init_state(score, process, ts, x)

    def body(carry, inp):
        x, state = carry
        t, s, k = inp
        x, state = sampler.step(jax.random.fold_in(key, k), score, process, t, s, x, state)
        return (x, state), (x if trajectory else None)

    (x_end, _), xs = adjoint.scan(body, (x, state), (ts[:-1], ts[1:], jnp.arange(K)), K)
    if trajectory:
        return jnp.concatenate([x[None], xs], axis=0)
    return x_end
