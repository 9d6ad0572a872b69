r"""Labelled exact laws: a class label per mixture component or per point.

Give each component $k$ of a mixture $\sum_k \pi_k N(m_k, C_k)$ (or each point of a point
cloud, $\pi_i = 1/N$) a class $c_k$. With $Y = c_K$ for the component $K$ that drew $X_0$,

* the law of $X_0$ given $Y = y$ is the same mixture restricted to the components of class
  $y$, weights renormalised: $\pi_k \mathbb 1[c_k = y] / \sum_{j: c_j = y} \pi_j$;
* the classifier at any noise level follows from the posterior component weights
  $w_k(x) = P(K = k \mid X_t = x)$: $p(y \mid X_t = x) = \sum_{k: c_k = y} w_k(x)$;
* Bayes' rule links them: $\nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) +
  \nabla_x \log p(y \mid X_t = x)$, the identity classifier guidance rests on.

All three are exact at every $t$, so guided samplers can be measured against them.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._checks import is_concrete
from ..distributions import AbstractLaw, GaussianMixture, PointCloud
from ..processes import AbstractProcess
from ..scores import ExactScore
from ._checks import check_label, check_labels
from .guidance import AbstractConditionalScore

Scalar = Float[ArrayLike, ""]


class Labelled(AbstractLaw):
    r"""A `GaussianMixture` with a class per component, or a `PointCloud` with a class per point.

    As a law it is the unlabelled one (same samples, score, posterior); `condition(y)` is the
    exact law of $X_0 \mid Y = y$ and `log_classifier_at` the exact $\log p(y \mid X_t = x)$.
    """

    law: GaussianMixture | PointCloud
    labels: Int[Array, " K"]
    n_classes: int = eqx.field(static=True)

    def __init__(self, law: GaussianMixture | PointCloud, labels, *, n_classes: int | None = None):
        """**Arguments:**

        - `law`: a `GaussianMixture` (one label per component) or a `PointCloud` (one label
          per point).
        - `labels`: integer classes, shape `(K,)` or `(N,)`, concrete.
        - `n_classes`: the number of classes (default: the largest label + 1). Every class
          must have at least one component or point.
        """
        if isinstance(law, GaussianMixture):
            n, what = law.n_components, "mixture component"
        elif isinstance(law, PointCloud):
            n, what = law.n_points, "point"
        else:
            raise ValueError(
                f"`law` must be a GaussianMixture or a PointCloud to carry labels, got {type(law).__name__}"
            )
        labels, n_classes = check_labels(labels, n, what, n_classes)
        counts = np.bincount(np.asarray(labels), minlength=n_classes)
        if np.any(counts == 0):
            raise ValueError(
                f"every class needs at least one {what}; classes "
                f"{np.flatnonzero(counts == 0).tolist()} have none"
            )
        self.law = law
        self.labels = labels
        self.n_classes = n_classes

    # ---- the unlabelled law ------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.law.dim

    @property
    def singular(self) -> bool:
        return self.law.singular

    def log_prob_at(self, alpha, sigma, x):
        return self.law.log_prob_at(alpha, sigma, x)

    def score_at(self, alpha, sigma, x):
        return self.law.score_at(alpha, sigma, x)

    def posterior_at(self, alpha, sigma, x):
        return self.law.posterior_at(alpha, sigma, x)

    def denoise_at(self, alpha, sigma, x):
        return self.law.denoise_at(alpha, sigma, x)

    def posterior_sample_at(self, key, alpha, sigma, x):
        return self.law.posterior_sample_at(key, alpha, sigma, x)

    def sample_at(self, key, n, alpha, sigma):
        return self.law.sample_at(key, n, alpha, sigma)

    # ---- classes -------------------------------------------------------------------------

    def class_weights(self) -> Float[Array, " C"]:
        """The prior class probabilities `P(Y = c)`."""
        if isinstance(self.law, PointCloud):
            w = jnp.full((self.law.n_points,), 1.0 / self.law.n_points)
        else:
            w = self.law.weights
        return jax.ops.segment_sum(w, self.labels, num_segments=self.n_classes)

    def condition(self, y: Int[ArrayLike, ""]) -> AbstractLaw:
        """The exact law of `X_0` given the class `Y = y`.

        A mixture keeps all its components, those of other classes at weight zero (so `y`
        may be traced). A point cloud with a concrete `y` gives the `PointCloud` of that
        class's points; with a traced `y`, the equivalent zero-variance `GaussianMixture`.
        """
        y = check_label("y", y, self.n_classes)
        if isinstance(self.law, GaussianMixture):
            lw = jnp.where(self.labels == y, self.law.log_weights, -jnp.inf)
            return eqx.tree_at(lambda m: m.log_weights, self.law, jax.nn.log_softmax(lw))
        points = self.law.points
        if is_concrete(y):
            return PointCloud(points[np.asarray(self.labels) == int(y)])
        member = (self.labels == y).astype(points.dtype)
        return GaussianMixture(points, 0.0, member / jnp.sum(member))

    def log_class_probs_at(self, alpha, sigma, x: Float[Array, " d"]) -> Float[Array, " C"]:
        """`log p(Y = c | alpha X_0 + sigma Z = x)` for every class `c`, shape `(n_classes,)`."""
        log_w = self.law.posterior_at(alpha, sigma, x).log_weights
        onehot = jax.nn.one_hot(self.labels, self.n_classes, dtype=log_w.dtype)
        # log sum_k w_k [c_k = c]; -inf entries of log(onehot) drop the other classes
        return jax.nn.logsumexp(log_w[:, None], b=onehot, axis=0)

    def log_classifier_at(
        self, alpha, sigma, x: Float[Array, " d"], y: Int[ArrayLike, ""]
    ) -> Float[Array, ""]:
        """`log p(Y = y | alpha X_0 + sigma Z = x)`, exact (from the posterior weights)."""
        y = check_label("y", y, self.n_classes)
        log_w = self.law.posterior_at(alpha, sigma, x).log_weights
        return jax.nn.logsumexp(jnp.where(self.labels == y, log_w, -jnp.inf))

    def classifier(self, process: AbstractProcess, y: Int[ArrayLike, ""]) -> ExactClassifier:
        """The exact noisy classifier `(t, x) -> log p(Y = y | X_t = x)` under `process`."""
        return ExactClassifier(process, self, y)


class ExactClassifier(eqx.Module):
    """`log p(Y = y | X_t = x)` of a `Labelled` law under a forward process, as `f(t, x)`.

    Pass it to `ClassifierGuidance` as the log-classifier.
    """

    process: AbstractProcess
    law: Labelled
    y: Int[Array, ""]

    def __init__(self, process: AbstractProcess, law: Labelled, y: Int[ArrayLike, ""]):
        """**Arguments:** `process`; `law`, a `Labelled` law; `y`, the class."""
        if not isinstance(law, Labelled):
            raise ValueError(f"`law` must be a Labelled law, got {type(law).__name__}")
        self.process = process
        self.law = law
        self.y = check_label("y", y, law.n_classes)

    def __call__(self, t: Scalar, x: Float[Array, " d"]) -> Float[Array, ""]:
        p = self.process
        return self.law.log_classifier_at(p.alpha(t), p.sigma(t), x, self.y)


class LabelledExactScore(AbstractConditionalScore):
    """The exact scores of a `Labelled` law: `conditional(y)` is the score of `X_t | Y = y`,
    `unconditional()` the score of `X_t`. Guidance (`guide`) takes it directly."""

    process: AbstractProcess
    law: Labelled

    def __init__(self, process: AbstractProcess, law: Labelled):
        """**Arguments:** `process`; `law`, a `Labelled` law."""
        if not isinstance(law, Labelled):
            raise ValueError(
                f"`law` must be a Labelled law (a class per component or point), got {type(law).__name__}"
            )
        self.process = process
        self.law = law

    @property
    def n_classes(self) -> int:
        return self.law.n_classes

    def conditional(self, y):
        return ExactScore(self.process, self.law.condition(y))

    def unconditional(self):
        return ExactScore(self.process, self.law)
