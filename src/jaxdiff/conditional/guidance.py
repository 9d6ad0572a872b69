r"""Guidance as score transformations.

Each guided score is again a score `s(t, x)` on one sample, so every sampler, the
likelihood and the Fokker–Planck solver take it unchanged.

**Classifier-free guidance** (Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022,
arXiv:2207.12598) mixes a conditional and an unconditional score,

$$\tilde s(t, x) = s(t, x) + \gamma\,\big(s(t, x \mid y) - s(t, x)\big),$$

with guidance scale $\gamma$: $\gamma = 0$ is unconditional, $\gamma = 1$ conditional,
$\gamma > 1$ pushes further along the class direction. (Ho & Salimans write
$(1 + w)\,\varepsilon(x, y) - w\,\varepsilon(x)$, i.e. $\gamma = 1 + w$.) Since
$s(t, x \mid y) - s(t, x) = \nabla_x \log p_t(y \mid x)$, the guided score is, at each fixed
$t$, the score of the tilted density $p_t(x)\, p_t(y \mid x)^\gamma$; but the family of
tilted densities is not the forward noising of one law, so sampling with $\tilde s$ does
not in general produce $p_0(x) p_0(y \mid x)^\gamma / Z$ (Chidambaram et al., "What does
guidance do? A fine-grained analysis in a simple setting", 2024, arXiv:2409.13074;
Bradley & Nakkiran, "Classifier-Free Guidance is a Predictor-Corrector", 2024,
arXiv:2408.09000).

A **guidance interval** (Kynkäänniemi et al., "Applying Guidance in a Limited Interval
Improves Sample and Distribution Quality in Diffusion Models", 2024, arXiv:2404.07724)
applies $\gamma$ only for $t$ in `[t_lo, t_hi]` and the plain conditional score ($\gamma = 1$)
elsewhere.

**Classifier guidance** (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image
Synthesis", 2021, arXiv:2105.05233) adds the gradient of a noisy classifier:
$\tilde s = s(t, x) + \gamma \nabla_x \log p_t(y \mid x)$. With the exact classifier of a
labelled law and $\gamma = 1$ it is the exact conditional score.
"""


import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import as_float_array, is_concrete
from ..processes import AbstractProcess
from ..scores import AbstractScore, tweedie_denoise, without_time_checks

Scalar = Float[ArrayLike, ""]


class AbstractConditionalScore(eqx.Module):
    """A score with a class-conditional and an unconditional branch (one network trained
    with label dropout, or the exact scores of a labelled law)."""

    process: eqx.AbstractVar[AbstractProcess]

    @property
    @abc.abstractmethod
    def n_classes(self) -> int:
        """The number of classes."""

    @abc.abstractmethod
    def conditional(self, y) -> AbstractScore:
        """The score of `X_t | Y = y`."""

    @abc.abstractmethod
    def unconditional(self) -> AbstractScore:
        """The score of `X_t`."""


def _process_of(score, process, name):
    if process is not None:
        if not isinstance(process, AbstractProcess):
            raise ValueError(f"`process` must be a jaxdiff process, got {type(process).__name__}")
        return process
    if isinstance(score, AbstractScore):
        return score.process
    raise ValueError(f"`{name}` is a plain callable: pass `process=` so the guided score knows its process")


def _scale(scale):
    s = as_float_array("scale", scale)
    if s.shape != ():
        raise ValueError(f"`scale` must be a scalar guidance scale, got shape {s.shape}")
    return s


def _interval(interval, T):
    if interval is None:
        return None
    try:
        lo, hi = interval
    except (TypeError, ValueError):
        raise ValueError(f"`interval` must be a pair (t_lo, t_hi) of times, got {interval!r}") from None
    lo, hi = as_float_array("interval", lo), as_float_array("interval", hi)
    if lo.shape != () or hi.shape != ():
        raise ValueError("`interval` must hold two scalar times (t_lo, t_hi)")
    if is_concrete(lo, hi) and not (0 <= float(lo) <= float(hi)):
        raise ValueError(f"`interval` must satisfy 0 <= t_lo <= t_hi, got ({float(lo)}, {float(hi)})")
    return lo, hi


class ClassifierFreeGuidance(AbstractScore):
    r"""`s(t, x) + scale * (s(t, x | y) - s(t, x))`, optionally only inside a time interval.

    `scale` (an array: differentiable, sweepable) is $\gamma$: 0 unconditional, 1
    conditional. Outside `interval = (t_lo, t_hi)` the conditional score is used.
    """

    conditional: AbstractScore
    unconditional: AbstractScore
    scale: Float[Array, ""]
    interval: tuple[Float[Array, ""], Float[Array, ""]] | None
    process: AbstractProcess

    def __init__(self, conditional, unconditional, scale: Scalar, interval=None, *, process=None):
        """**Arguments:**

        - `conditional`: the score of `X_t | Y = y`, `f(t, x)`.
        - `unconditional`: the score of `X_t`. Required: classifier-free guidance needs
          both branches.
        - `scale`: the guidance scale $\\gamma$ (a scalar).
        - `interval`: `(t_lo, t_hi)`: guide only for `t_lo <= t <= t_hi` (default: always).
        - `process`: needed only when `conditional` is a plain callable.
        """
        if unconditional is None:
            raise ValueError(
                "classifier-free guidance needs an unconditional score: pass `unconditional=` (for a "
                "network, train it with label dropout, `train(..., labels=..., label_dropout=0.1)`)"
            )
        for name, s in (("conditional", conditional), ("unconditional", unconditional)):
            if not callable(s):
                raise ValueError(f"`{name}` must be a score, callable as f(t, x), got {type(s).__name__}")
        self.process = _process_of(conditional, process, "conditional")
        self.conditional = conditional
        self.unconditional = unconditional
        self.scale = _scale(scale)
        self.interval = _interval(interval, self.process.T)

    def without_time_checks(self) -> "ClassifierFreeGuidance":
        return eqx.tree_at(
            lambda s: (s.conditional, s.unconditional),
            self,
            (without_time_checks(self.conditional), without_time_checks(self.unconditional)),
        )

    def denoise(self, t, x):
        return tweedie_denoise(self, t, x)

    def __call__(self, t, x):
        sc, su = self.conditional(t, x), self.unconditional(t, x)
        w = self.scale
        if self.interval is not None:
            lo, hi = self.interval
            w = jnp.where((t >= lo) & (t <= hi), w, jnp.ones_like(w))
        return su + w.astype(su.dtype) * (sc - su)


class ClassifierGuidance(AbstractScore):
    r"""`s(t, x) + scale * grad_x log_classifier(t, x)` (Dhariwal & Nichol 2021).

    `log_classifier(t, x)` returns the scalar $\log p_t(y \mid x)$ for the wanted class, e.g.
    `labelled_law.classifier(process, y)` (exact) or a trained network's log-softmax entry.
    """

    score: AbstractScore
    log_classifier: Callable
    scale: Float[Array, ""]
    process: AbstractProcess

    def __init__(self, score, log_classifier, scale: Scalar, *, process=None):
        """**Arguments:** `score`, the unconditional score; `log_classifier`, `f(t, x) -> scalar`;
        `scale`, the guidance scale (1 with an exact classifier gives the conditional score);
        `process`, needed only when `score` is a plain callable."""
        if not callable(score):
            raise ValueError(f"`score` must be callable as score(t, x), got {type(score).__name__}")
        if not callable(log_classifier):
            raise ValueError(
                "`log_classifier` must be callable as f(t, x) -> log p(y | x_t), got "
                f"{type(log_classifier).__name__}"
            )
        self.process = _process_of(score, process, "score")
        self.score = score
        self.log_classifier = log_classifier
        self.scale = _scale(scale)

    def without_time_checks(self) -> "ClassifierGuidance":
        return eqx.tree_at(lambda s: s.score, self, without_time_checks(self.score))

    def denoise(self, t, x):
        return tweedie_denoise(self, t, x)

    def __call__(self, t, x):
        s = self.score(t, x)
        g = jax.grad(lambda z: jnp.sum(self.log_classifier(t, z)))(x)
        return s + self.scale.astype(s.dtype) * g


def guide(score: AbstractConditionalScore, y, scale: Scalar, *, interval=None) -> ClassifierFreeGuidance:
    """Classifier-free guidance of a conditional score toward class `y`:
    `ClassifierFreeGuidance(score.conditional(y), score.unconditional(), scale, interval)`."""
    if not isinstance(score, AbstractConditionalScore):
        raise ValueError(
            f"guidance needs a score with a conditional and an unconditional branch (a "
            f"LabelledExactScore, or a ConditionalNetworkScore trained with label dropout); got "
            f"{type(score).__name__}, which has no unconditional branch"
        )
    return ClassifierFreeGuidance(score.conditional(y), score.unconditional(), scale, interval)
