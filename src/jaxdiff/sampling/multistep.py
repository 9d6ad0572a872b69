r"""Adams–Bashforth multistep samplers in the VE-equivalent variables: `LMS`, `IPNDM`, `DEIS`.

Any linear process $X_t = \alpha X_0 + \sigma Z$ becomes, with $y = x/\alpha$ and the noise
level $\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}$ ($\lambda$ the log-SNR), the VE
probability-flow ODE of Karras et al. (2022, "Elucidating the design space of
diffusion-based generative models", arXiv 2206.00364):

$$\frac{dy}{d\tilde\sigma} = \hat\varepsilon(\tilde\sigma, y) = \frac{y - D(y; \tilde\sigma)}{\tilde\sigma},$$

with $D$ the denoiser. One step from $\tilde\sigma_i$ to $\tilde\sigma_{i+1}$ is
$y_{i+1} = y_i + \sum_j c_j \hat\varepsilon_{i-j}$: the last $q$ evaluations
($q = \min(i + 1, \text{order})$, the lower-order warm start) are interpolated by a
polynomial and the polynomial is integrated over the step. Each step costs one denoiser
evaluation, and its history (the last `order - 1` values of $\hat\varepsilon$ and their noise
levels) is a plain pytree in the scan's state.

* `LMS`: the polynomial in $\tilde\sigma$ (the linear multistep method in the noise level of
  Crowson's k-diffusion), its Lagrange basis integrated exactly over each non-uniform step:
  $c_j = \int_{\tilde\sigma_i}^{\tilde\sigma_{i+1}} \ell_j(\tilde\sigma)\,d\tilde\sigma$.
  Global order `order`.
* `DEIS`: the polynomial in $\rho = \log\tilde\sigma = -\lambda/2$ (Zhang & Chen 2023, "Fast
  sampling of diffusion models with exponential integrator", arXiv 2204.13902, the AB
  exponential integrator in the log-SNR): $dy = e^\rho \hat\varepsilon\,d\rho$, so
  $c_j = \int_{\rho_i}^{\rho_{i+1}} e^\rho \ell_j(\rho)\,d\rho$. Global order `order`.
* `IPNDM`: the improved pseudo numerical method of Zhang & Chen (same paper, their iPNDM):
  Adams–Bashforth with the fixed equal-step coefficients, $c_j = (\tilde\sigma_{i+1} -
  \tilde\sigma_i)\,b^{(q)}_j$, e.g. $b^{(4)} = (55, -59, 37, -9)/24$. Order `order` on steps
  equal in $\tilde\sigma$; on a non-uniform grid the fixed weights make it second order.

The integrals are taken by 16-point Gauss–Legendre quadrature: exact for the polynomials of
`LMS` and accurate to rounding for the smooth weight $e^\rho$ of `DEIS` (steps of up to ten
units in $\rho$).
"""


import abc

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .base import AbstractStepSampler, denoiser
from .edm import noise_level

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)

# Adams–Bashforth coefficients for equal steps, most recent value first (iPNDM's table).
_AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def check_order(name: str, order, allowed: tuple[int, ...]) -> int:
    """`order` as an int, or a ValueError naming the sampler and the orders it supports."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or int(order) not in allowed:
        raise ValueError(f"`order` of {name} must be one of {allowed}, got {order!r}")
    return int(order)


def warm_order(n, order: int):
    """The order of the current step: `min(n + 1, order)` with `n` the steps taken so far."""
    return jnp.minimum(n + 1, order)


def select_by_order(q, variants):
    """`variants[q - 1]` for a traced order `q` (all variants are finite: no NaN leaks into
    the gradient through the unselected branches)."""
    out = variants[0]
    for k in range(1, len(variants)):
        out = jnp.where(q == k + 1, variants[k], out)
    return out


def dummy_history(first, second, m: int, dtype):
    """`m` distinct node values continuing the grid backwards beyond its start: placeholders
    that keep every (unused) Lagrange basis finite before the history fills."""
    step = first - second
    return first + step * jnp.arange(1, m + 1, dtype=dtype)


def lagrange_integrals(nodes, a, b, weight):
    r"""$\int_a^b w(u)\,\ell_j(u)\,du$ for the Lagrange basis $\ell_j$ on `nodes` (shape (q,)),
    by 16-point Gauss–Legendre quadrature."""
    half, mid = 0.5 * (b - a), 0.5 * (b + a)
    u = mid + half * jnp.asarray(_GL_X, nodes.dtype)  # (16,)
    q = nodes.shape[0]
    basis = []
    for j in range(q):
        lj = jnp.ones_like(u)
        for m in range(q):
            if m != j:
                lj = lj * (u - nodes[m]) / (nodes[j] - nodes[m])
        basis.append(lj)
    basis = jnp.stack(basis)  # (q, 16)
    return half * jnp.sum(basis * weight(u) * jnp.asarray(_GL_W, nodes.dtype), axis=1)


class AbstractAdamsBashforth(AbstractStepSampler):
    r"""An explicit multistep method for $dy/d\tilde\sigma = \hat\varepsilon$ (module docstring):
    one evaluation per step, a lower-order warm start, the history in the state."""

    order: eqx.AbstractVar[int]

    @abc.abstractmethod
    def weights(self, sig_t, sig_s, sig_hist, q: int):
        r"""The `q` weights $c_j$ of $\hat\varepsilon$ at the noise levels `[sig_t, *sig_hist]`
        (the current one first) for the step from `sig_t` to `sig_s`."""

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        m = self.order - 1
        s0, s1 = noise_level(process, ts[0]), noise_level(process, ts[1])
        eps = jnp.zeros((m, *x.shape), x.dtype)
        return eps, dummy_history(s0, s1, m, ts.dtype), jnp.zeros((), jnp.int32)

    def step(self, key, score, process, t, s, x, state):
        eps_hist, sig_hist, n = state
        sig_t, sig_s = noise_level(process, t), noise_level(process, s)
        y = x / process.alpha(t)
        eps = (y - denoiser(score, process)(t, x)) / sig_t
        vals = jnp.concatenate([eps[None], eps_hist], axis=0)  # (order, *event)
        variants = []
        for q in range(1, self.order + 1):
            c = self.weights(sig_t, sig_s, sig_hist[: q - 1], q)
            variants.append(jnp.concatenate([c, jnp.zeros((self.order - q,), c.dtype)]))
        c = select_by_order(warm_order(n, self.order), variants)
        y_s = y + jnp.tensordot(c.astype(vals.dtype), vals, axes=1)
        new = (vals[:-1], jnp.concatenate([sig_t[None], sig_hist])[:-1].astype(sig_hist.dtype), n + 1)
        return process.alpha(s) * y_s, new


class LMS(AbstractAdamsBashforth):
    """Linear multistep in the noise level: the Lagrange polynomial of the last `order`
    evaluations integrated exactly over each step (orders 1-4; order 1 is Euler, i.e. DDIM)."""

    order: int = 4

    def __init__(self, order: int = 4):
        """**Arguments:** `order`: 1, 2, 3 or 4."""
        self.order = check_order("LMS", order, (1, 2, 3, 4))

    def weights(self, sig_t, sig_s, sig_hist, q):
        nodes = jnp.concatenate([sig_t[None], sig_hist])
        return lagrange_integrals(nodes, sig_t, sig_s, jnp.ones_like)


class DEIS(AbstractAdamsBashforth):
    """DEIS's Adams–Bashforth exponential integrator in the log noise level (orders 1-4;
    order 1 is DDIM)."""

    order: int = 3

    def __init__(self, order: int = 3):
        """**Arguments:** `order`: 1, 2, 3 or 4."""
        self.order = check_order("DEIS", order, (1, 2, 3, 4))

    def weights(self, sig_t, sig_s, sig_hist, q):
        nodes = jnp.log(jnp.concatenate([sig_t[None], sig_hist]))
        return lagrange_integrals(nodes, jnp.log(sig_t), jnp.log(sig_s), jnp.exp)


class IPNDM(AbstractAdamsBashforth):
    """Improved PNDM: Adams–Bashforth with the equal-step coefficients in the noise level
    (orders 1-4), warm-started with the lower orders."""

    order: int = 4

    def __init__(self, order: int = 4):
        """**Arguments:** `order`: 1, 2, 3 or 4."""
        self.order = check_order("IPNDM", order, (1, 2, 3, 4))

    def weights(self, sig_t, sig_s, sig_hist, q):
        return (sig_s - sig_t) * jnp.asarray(_AB[q], jnp.result_type(sig_t))
