r"""Learned scores: a network wrapped by a parametrisation.

Write $X_t = \alpha X_0 + \sigma \varepsilon$ and $\tilde\sigma = \sigma/\alpha$ (the noise
level of $X_t/\alpha = X_0 + \tilde\sigma\varepsilon$, the variance-exploding view). Every
parametrisation feeds the network the same two inputs,

$$c_{in}\,x \quad\text{with}\quad c_{in} = \frac{1}{\sqrt{\alpha^2\sigma_d^2 + \sigma^2}},
\qquad c_{noise} = \tfrac14 \log\tilde\sigma,$$

EDM's input scaling and noise conditioning for a general $(\alpha, \sigma)$ process (Karras
et al. 2022, Table 1): $c_{in} x$ has unit variance when the data has variance
$\sigma_d^2$ per coordinate, and $c_{noise}$ is the same for two processes at the same
signal-to-noise ratio. (For variance-preserving processes and $\sigma_d = 1$, $c_{in} = 1$.)
They differ in what the network output $F$ means:

| parametrisation | $F$ estimates | score |
|---|---|---|
| `EpsParam` | $\varepsilon$ | $-F/\sigma$ |
| `X0Param` | $X_0$ | $(\alpha F - x)/\sigma^2$ |
| `VParam` | $v = (\alpha\varepsilon - \sigma X_0)/r$ | $-(\sigma x/r^2 + \alpha F/r)/\sigma$ |
| `ScoreParam` | the score | $F$ |
| `EDMParam` | $D = c_{skip}\,x/\alpha + c_{out} F \approx X_0$ | $(\alpha D - x)/\sigma^2$ |

with $c_{skip} = \sigma_d^2/(\tilde\sigma^2+\sigma_d^2)$ and
$c_{out} = \tilde\sigma\sigma_d/\sqrt{\tilde\sigma^2+\sigma_d^2}$. For `VParam`,
$x/r = \cos\phi\, X_0 + \sin\phi\,\varepsilon$ and $v = \cos\phi\,\varepsilon - \sin\phi\,X_0$
with $\cos\phi = \alpha/r$ (Salimans & Ho 2022, extended to $\alpha^2+\sigma^2 \ne 1$), so
$\varepsilon = \sin\phi\, x/r + \cos\phi\, v$, where $r = \sqrt{\alpha^2+\sigma^2}$.
"""


import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_time
from .processes import AbstractProcess
from .scores import AbstractScore, tweedie_denoise

Scalar = Float[ArrayLike, ""]


class AbstractParametrisation(eqx.Module):
    """What the network output means, and how it becomes a score.

    The input scaling `c_in` and the noise conditioning `c_noise` are shared by all
    parametrisations (see the module docstring); subclasses give `score`.
    """

    sigma_data: eqx.AbstractVar[float | None]

    def c_in(self, process: AbstractProcess, t: Scalar) -> Float[Array, ""]:
        """Input scale `1 / sqrt(alpha^2 sigma_data^2 + sigma^2)`."""
        sd = _sigma_data(self)
        return jnp.reciprocal(jnp.sqrt(process.alpha(t) ** 2 * sd**2 + process.sigma2(t)))

    def c_noise(self, process: AbstractProcess, t: Scalar) -> Float[Array, ""]:
        """Noise conditioning `log(sigma / alpha) / 4 = -log_snr / 8`, with the log-SNR clipped
        to `[-60, 60]` (an interpolant's is infinite at its ends `t = 0` and `t = T`)."""
        return -0.125 * jnp.clip(process.log_snr(t), -60.0, 60.0)

    @abc.abstractmethod
    def score(self, process: AbstractProcess, t: Scalar, x: Array, out: Array) -> Array:
        """The score at `(t, x)` given the network output `out` (same shape as `x`)."""


def _sigma_data(p: AbstractParametrisation) -> float:
    # `None` is "not yet estimated from the data" (see `EDMParam`)
    return 1.0 if p.sigma_data is None else p.sigma_data


class EpsParam(AbstractParametrisation):
    """The network predicts the noise `eps` (Ho et al. 2020): `score = -F / sigma`."""

    sigma_data: float = 1.0

    def score(self, process, t, x, out):
        return -out / process.sigma(t)


class X0Param(AbstractParametrisation):
    """The network predicts the clean data `X_0`: `score = (alpha F - x) / sigma^2`."""

    sigma_data: float = 1.0

    def score(self, process, t, x, out):
        return (process.alpha(t) * out - x) / process.sigma2(t)


class VParam(AbstractParametrisation):
    """The network predicts the velocity `v = (alpha eps - sigma X_0) / sqrt(alpha^2 + sigma^2)`."""

    sigma_data: float = 1.0

    def score(self, process, t, x, out):
        alpha, sigma2 = process.alpha(t), process.sigma2(t)
        sigma = jnp.sqrt(sigma2)
        r2 = alpha**2 + sigma2
        eps = sigma * x / r2 + alpha * out / jnp.sqrt(r2)
        return -eps / sigma


class ScoreParam(AbstractParametrisation):
    """The network output is the score itself (Song & Ermon 2019, without rescaling)."""

    sigma_data: float = 1.0

    def score(self, process, t, x, out):
        return out


class EDMParam(AbstractParametrisation):
    """EDM preconditioning (Karras et al. 2022) in the scaled view `x / alpha`:
    `D = c_skip x / alpha + c_out F`, `score = (alpha D - x) / sigma^2`.

    `sigma_data`, the scale of the data per coordinate: a number, or `None` (the default),
    which `jaxdiff.train` replaces by the root mean square of the training data (recorded in
    the trained score). Until then, `None` acts as 1, the scale of standardised data.
    """

    sigma_data: float | None = None

    def c_skip_out(self, process: AbstractProcess, t: Scalar) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """`(c_skip, c_out)` at time `t` (functions of `sigma~ = sigma / alpha` only)."""
        st2 = jnp.exp(-process.log_snr(t))  # sigma~^2, accurate for small t
        sd2 = _sigma_data(self) ** 2
        return sd2 / (st2 + sd2), jnp.sqrt(st2 * sd2 / (st2 + sd2))

    def score(self, process, t, x, out):
        alpha = process.alpha(t)
        c_skip, c_out = self.c_skip_out(process, t)
        d = c_skip * x / alpha + c_out * out
        return (alpha * d - x) / process.sigma2(t)


class NetworkScore(AbstractScore):
    r"""A learned score: `score(t, x) = param.score(t, x, model(c_noise(t), c_in(t) x))`.

    `model` is any callable `model(c, x)` on one sample (e.g. `jaxdiff.nn.MLP`,
    `jaxdiff.nn.UNet`); only its arrays are trained. The score is singular at `t = 0` for
    every parametrisation but `ScoreParam`, so `t > 0` is required.
    """

    model: eqx.Module
    process: AbstractProcess
    parametrisation: AbstractParametrisation
    check_times: bool = eqx.field(static=True)

    def __init__(self, model, process: AbstractProcess,
                 parametrisation: AbstractParametrisation | None = None, *, check_times: bool = True):
        """**Arguments:**

        - `model`: the network, `model(c, x) -> array shaped like x`.
        - `process`: the forward process the score belongs to.
        - `parametrisation`: `EDMParam()` (default: EDM preconditioning, its `sigma_data`
          estimated from the data by `train`), `EpsParam()`, `X0Param()`, `VParam()`,
          `ScoreParam()` or `EDMParam(sigma_data=...)`.
        - `check_times`: check a traced `t` at run time (see `without_time_checks`).
        """
        if not callable(model):
            raise ValueError(f"`model` must be callable as model(c, x), got {type(model).__name__}")
        if not isinstance(process, AbstractProcess):
            raise ValueError(f"`process` must be a jaxdiff process (OU, VP...), got {type(process).__name__}")
        if parametrisation is None:
            parametrisation = EDMParam()
        if not isinstance(parametrisation, AbstractParametrisation):
            raise ValueError(
                "`parametrisation` must be one of EpsParam(), X0Param(), VParam(), ScoreParam(), EDMParam(), "
                f"got {parametrisation!r}"
            )
        self.model = model
        self.process = process
        self.parametrisation = parametrisation
        self.check_times = bool(check_times)

    def without_time_checks(self) -> "NetworkScore":
        return NetworkScore(self.model, self.process, self.parametrisation, check_times=False)

    def denoise(self, t, x):
        return tweedie_denoise(self, t, x)

    def __call__(self, t, x):
        t = check_time("t", t, self.process.T, strictly_positive=True,
                       what="a network score is parametrised through sigma(t), which vanishes at t = 0",
                       traced=self.check_times)
        p, proc = self.parametrisation, self.process
        out = self.model(p.c_noise(proc, t), p.c_in(proc, t) * x)
        return p.score(proc, t, x, out.astype(jnp.result_type(out, x)))
