r"""An adaptive step-size solver of the reverse SDE (Jolicoeur-Martineau, Li, Piché-Taillefer,
Kachman & Mitliagkas 2021, "Gotta go fast when generating data with score-based models",
arXiv 2105.14080).

The reverse SDE $dx = [f(t)x - g(t)^2 s(t, x)]\,dt + g(t)\,d\bar W$ is integrated from `T`
down to `t_end` with steps $h$ chosen for each sample. One attempt from $t$ to $t - h$ takes
the Brownian increment $\Delta W$ over $[t - h, t]$ and forms the embedded pair

$$x' = x - h\,b(t, x) + g(t)\,\Delta W, \qquad
\tilde x = x - h\,b(t - h, x') + g(t - h)\,\Delta W, \qquad x'' = \tfrac12(x' + \tilde x),$$

with $b = f x - g^2 s$: Euler–Maruyama ($x'$) and the stochastic improved Euler step
($x''$), two score evaluations. With the mixed tolerance
$\delta = \max(\varepsilon_\mathrm{abs}, \varepsilon_\mathrm{rel}\max(|x'|, |x'_\mathrm{prev}|))$
(elementwise; $x'_\mathrm{prev}$ the last accepted $x'$) the error is
$E = \|(x' - x'')/\delta\|_2/\sqrt{n}$. The attempt is accepted when $E \le 1$ (then
$x \leftarrow x''$, $t \leftarrow t - h$), and in either case
$h \leftarrow \min(t - t_\mathrm{end}, \theta h E^{-r})$ with $\theta = 0.9$, $r = 0.9$.
The noise is the increment of one Brownian path per sample (a Diffrax
`VirtualBrownianTree`, resolved to `brownian_tol * T`): every attempt, rejected or not, sees
the same path. Redrawing the noise of a rejected attempt, as the paper does, accepts steps
selectively by their noise and biases the law. The evaluations per sample (`2 x attempts`) are
returned by `sample_with_nfe`.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._checks import is_concrete
from ..processes import AbstractProcess, reverse_drift
from ..scores import without_time_checks
from .adjoint import BackpropAdjoint
from .base import AbstractScoreSampler, denoiser

Scalar = Float[ArrayLike, ""]


class AdaptiveSDE(AbstractScoreSampler):
    """The adaptive reverse-SDE solver of Jolicoeur-Martineau et al. (2021); each sample
    chooses its own steps. Use `sample_with_nfe` to get the evaluations per sample."""

    rtol: Scalar = 0.05
    atol: Scalar = 0.01
    h_init: Scalar = 0.01
    safety: float = 0.9
    exponent: float = 0.9
    max_attempts: int = 10_000
    brownian_tol: float = 1e-6

    def __init__(self, rtol: Scalar = 0.05, atol: Scalar = 0.01, *, h_init: Scalar = 0.01,
                 safety: float = 0.9, exponent: float = 0.9, max_attempts: int = 10_000,
                 brownian_tol: float = 1e-6):  # fmt: skip
        """**Arguments:** `rtol`, `atol`: the relative and absolute tolerances (> 0); `h_init`:
        the first step as a fraction of `T`; `safety` ($\\theta$) and `exponent` ($r$) of the
        step-size rule; `max_attempts`: the cap on attempted steps per sample;
        `brownian_tol`: the resolution of the Brownian path as a fraction of the time span."""
        for name, v in (("rtol", rtol), ("atol", atol), ("h_init", h_init)):
            if is_concrete(v) and not float(v) > 0:
                raise ValueError(f"`{name}` must be > 0, got {v}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"`max_attempts` must be a positive integer, got {max_attempts!r}")
        self.rtol, self.atol, self.h_init = rtol, atol, h_init
        self.safety, self.exponent, self.max_attempts = safety, exponent, max_attempts
        self.brownian_tol = brownian_tol

    def nfe(self, steps):
        return None

    def solve(self, key: PRNGKeyArray, score, process: AbstractProcess, t0, t1, x):
        """One sample from `t0` down to `t1`: returns `(x at t1, score evaluations)`."""
        dtype = x.dtype
        t0, t1 = jnp.asarray(t0, dtype), jnp.asarray(t1, dtype)

        bm = diffrax.VirtualBrownianTree(t1, t0, tol=self.brownian_tol * (t0 - t1), shape=x.shape, key=key)

        def b(t, y):  # the drift in ordinary time: minus the reverse-time drift
            return -reverse_drift(process, score, t, y)

        def cond(c):
            t, h, y, yp, k, j = c
            return (t > t1) & (k < self.max_attempts)

        def body(c):
            t, h, y, yp, k, j = c  # k: attempts, j: accepted steps
            h = jnp.minimum(h, t - t1)
            s = jnp.where(t - h <= t1, t1, t - h)  # land on t1 exactly
            dw = bm.evaluate(s, t)  # W(t) - W(s): the one Brownian path, whatever steps are tried
            g_t, g_s = jnp.sqrt(process.g2(t)), jnp.sqrt(process.g2(s))
            dt = t - s
            x1 = y - dt * b(t, y) + g_t * dw
            x2 = y - dt * b(s, x1) + g_s * dw
            x_hi = 0.5 * (x1 + x2)
            delta = jnp.maximum(self.atol, self.rtol * jnp.maximum(jnp.abs(x1), jnp.abs(yp)))
            err = jnp.sqrt(jnp.mean(jnp.square((x1 - x_hi) / delta)))
            ok = err <= 1
            h_new = self.safety * dt * jnp.maximum(err, 1e-10) ** (-self.exponent)
            t = jnp.where(ok, s, t)
            return t, h_new, jnp.where(ok, x_hi, y), jnp.where(ok, x1, yp), k + 1, j + ok.astype(j.dtype)

        h0 = jnp.asarray(self.h_init, dtype) * (t0 - t1)
        zero = jnp.zeros((), jnp.int32)
        t, _, y, _, k, _ = jax.lax.while_loop(cond, body, (t0, h0, x, x, zero, zero))
        y = eqx.error_if(
            y, t > t1, "AdaptiveSDE: `max_attempts` reached before t_end (loosen the tolerances)"
        )
        return y, 2 * k

    def integrate(self, key, score, process, ts, x, *, trajectory, adjoint):
        if trajectory:
            raise ValueError("AdaptiveSDE chooses its own steps: `trajectory=True` is not supported")
        if not isinstance(adjoint, BackpropAdjoint):
            # its step loop is a while loop, which JAX cannot reverse-differentiate at all
            raise ValueError(
                f"AdaptiveSDE takes no `adjoint` (got {type(adjoint).__name__}): its adaptive loop has no "
                "reverse-mode derivative; differentiate a fixed-grid sampler instead"
            )
        return self.solve(key, score, process, ts[0], ts[-1], x)[0]

    @eqx.filter_jit
    def sample_with_nfe(
        self,
        key: PRNGKeyArray,
        score,
        process: AbstractProcess,
        shape: tuple[int, ...],
        *,
        t_end: Scalar,
        denoise: bool = True,
        x_init: Float[Array, " batch *event"] | None = None,
    ) -> tuple[Float[Array, " batch *event"], Int[Array, " batch"]]:
        """Samples as `jd.sample(key, score, process, shape, sampler=self, t_end=t_end,
        denoise=denoise)` draws them (same keys), and the evaluations each sample used
        (the final denoiser step included)."""
        score = without_time_checks(score)
        dtype = jnp.result_type(t_end, float)
        k_init, k_noise = jax.random.split(key)
        x = process.prior_sample(k_init, shape, dtype) if x_init is None else x_init.astype(dtype)
        T = jnp.asarray(process.T, dtype)

        def one(i, xi):
            return self.solve(jax.random.fold_in(k_noise, i), score, process, T, t_end, xi)

        xs, nfe = jax.vmap(one)(jnp.arange(shape[0]), x)
        if denoise:
            xs = jax.vmap(denoiser(score, process), in_axes=(None, 0))(jnp.asarray(t_end, dtype), xs)
            nfe = nfe + 1
        return xs, nfe
