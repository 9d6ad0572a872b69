r"""The exact reverse transition of a linear forward process started at a point.

For `dX = f(t) X dt + g(t) dW` with `X_t | X_0 ~ N(alpha_t X_0, sigma_t^2 I)`, the transition
from `s` to `t > s` is `X_t | X_s ~ N(a X_s, v I)` with `a = alpha_t / alpha_s` and
`v = sigma_t^2 - a^2 sigma_s^2`. Bayes' rule with the prior `X_s | X_0 ~ N(alpha_s x0, sigma_s^2 I)`
gives the Gaussian bridge

$$X_s \mid X_t = x_t, X_0 = x_0 \;\sim\; N\Big(\alpha_s (1 - r)\, x_0 + r \frac{\alpha_s}{\alpha_t} x_t,\;
\sigma_s^2 (1 - r)\, I\Big), \qquad r = \frac{\alpha_t^2 \sigma_s^2}{\alpha_s^2 \sigma_t^2}
= e^{\lambda_t - \lambda_s},$$

with $\lambda = \log(\alpha^2/\sigma^2)$ the log-SNR. Writing everything through $\lambda$ avoids the
cancellation in $v$ as $s \to t$ ($1 - r$ is an `expm1`). For OU this is the bridge
coefficient of $x_t$ is $\sinh s / \sinh t$, of $x_0$ is $e^{-s} s_{t-s}^2/s_t^2$, variance
$s_s^2 s_{t-s}^2 / s_t^2$. It is also the DDPM posterior $q(x_{k-1} | x_k, x_0)$ on the grid.
At `s = 0` it returns `(x0, 0)`; at `s = t`, `(x_t, 0)`.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_time
from ..processes import AbstractProcess

Scalar = Float[ArrayLike, ""]


def bridge_coefficients(process: AbstractProcess, t: Scalar, s: Scalar):
    """`(c_t, c_0, std)` with `X_s | X_t, X_0 ~ N(c_t X_t + c_0 X_0, std^2 I)` (no checks)."""
    t, s = jnp.asarray(t), jnp.asarray(s)
    dlam = process.log_snr(t) - process.log_snr(s)  # <= 0 for s <= t
    one_minus_r = -jnp.expm1(dlam)
    alpha_s = process.alpha(s)
    # c_t = r alpha_s / alpha_t = alpha_t sigma_s^2 / (alpha_s sigma_t^2), written without
    # lambda_t so that it is 0 (not inf * 0) where alpha_t = 0 (an interpolant at T)
    c_t = jnp.exp(
        process.log_alpha(t) - process.log_alpha(s) + jnp.log(process.sigma2(s)) - jnp.log(process.sigma2(t))
    )
    c_0 = alpha_s * one_minus_r
    std = jnp.sqrt(process.sigma2(s) * one_minus_r)
    return c_t, c_0, std


def _check_times(process, t, s):
    if jnp.shape(t) != () or jnp.shape(s) != ():
        raise ValueError(f"`t` and `s` must be scalar times, got shapes {jnp.shape(t)} and {jnp.shape(s)}")
    t = check_time("t", t, process.T, strictly_positive=True)
    s = check_time("s", s, t, strictly_positive=False, bound="t", what="the bridge runs backwards in time")
    return t, s


def bridge(
    process: AbstractProcess, t: Scalar, s: Scalar, x_t: Float[Array, "*shape"], x0: Float[Array, "*shape"]
) -> tuple[Float[Array, "*shape"], Float[Array, ""]]:
    r"""Mean and standard deviation of $X_s \mid X_t = x_t, X_0 = x_0$ for $0 \le s \le t$.

    **Arguments:** `process`: any linear forward process; `t`, `s`: times with `s <= t`;
    `x_t`, `x0`: arrays of one shape (one sample or a batch: the map is elementwise).

    **Returns:** `(mean, std)`: `mean` has the shape of `x_t`, `std` is a scalar (the
    bridge's noise is isotropic).
    """
    if not isinstance(process, AbstractProcess):
        raise ValueError(f"`process` must be a jaxdiff process (OU, VP, ...), got {type(process).__name__}")
    t, s = _check_times(process, t, s)
    if jnp.shape(x_t) != jnp.shape(x0):
        raise ValueError(f"`x_t` and `x0` must have the same shape, got {jnp.shape(x_t)} and {jnp.shape(x0)}")
    c_t, c_0, std = bridge_coefficients(process, t, s)
    return c_t * x_t + c_0 * x0, std
