r"""UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework for fast sampling
of diffusion models", arXiv 2302.04867), multistep, in data prediction.

With $\lambda = \log(\alpha/\sigma)$ (half the log-SNR), the denoiser $m = D(t, x)$ and the
VE-equivalent state $y = x/\alpha$, one step from $t_{i-1}$ to $t_i$
($h = \lambda_{t_i} - \lambda_{t_{i-1}}$) with the previous evaluations $m_0 = m_{i-1}$,
$m_k$ at $\lambda_{(k)}$, $r_k = (\lambda_{(k)} - \lambda_{t_{i-1}})/h$ and
$\Delta_k = (m_k - m_0)/r_k$ is

* **UniP-q** (predictor): $\tilde y_i = \frac{\tilde\sigma_i}{\tilde\sigma_{i-1}} y_{i-1}
  - (e^{-h} - 1)\,m_0 - B(h) \sum_{k=1}^{q-1} \rho^p_k \Delta_k$;
* **UniC** (corrector), after evaluating $m_i = D(t_i, \tilde x_i)$ at the predicted state:
  the same formula with one more term $\rho^c_q (m_i - m_0)$ (with $r_q = 1$), raising the
  order by one. $m_i$ is the evaluation the next predictor needs anyway, so the corrector
  is free: one evaluation per step. The last step has no corrector (it would need one more
  evaluation).

The weights solve $R\rho = b$ with $R_{jk} = r_k^{j-1}$ and $b_j = j!\,\varphi_{j+1}(-h)/B(h)$,
$\varphi_1 = (e^{-h}-1)/(-h)$, $\varphi_{k+1} = (\varphi_k - 1/k!)/(-h)$ (scaled as in the paper);
for $q = 2$ the predictor uses $\rho^p = 1/2$ and for $q = 1$ the corrector uses
$\rho^c = 1/2$. The two variants of the paper: $B(h) = -h$ (`"bh1"`) and
$B(h) = e^{-h} - 1$ (`"bh2"`). The history (last `order` evaluations, their $\lambda$, the
previous state) is a plain pytree in the scan's state. A lower-order warm start:
$q = \min(i, \text{order})$.
"""

from __future__ import annotations

import jax.numpy as jnp

from .base import AbstractStepSampler, denoiser
from .edm import noise_level
from .multistep import check_order, dummy_history, select_by_order


def _b_vector(h, q: int, variant: str):
    hh = -h  # data prediction
    phi1 = jnp.expm1(hh)
    B = hh if variant == "bh1" else phi1
    h_phi_k = phi1 / hh - 1
    fact, b = 1, []
    for i in range(1, q + 1):
        b.append(h_phi_k * fact / B)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    return jnp.stack(b), B, phi1


def _update(y, sig_ratio, m_hist, lam_hist, h, q: int, variant: str, m_new=None):
    """The UniP-q step from the state `y` at `lam_hist[0]`, or with `m_new` the UniC one."""
    b, B, phi1 = _b_vector(h, q, variant)
    base = sig_ratio * y - phi1 * m_hist[0]
    rks = [(lam_hist[k] - lam_hist[0]) / h for k in range(1, q)]
    deltas = [(m_hist[k] - m_hist[0]) / rks[k - 1] for k in range(1, q)]
    if m_new is None:  # predictor, q - 1 differences
        if q == 1:
            return base
        if q == 2:
            rho = [jnp.asarray(0.5, h.dtype)]
        else:
            R = jnp.stack([jnp.stack(rks) ** j for j in range(q - 1)])
            rho = list(jnp.linalg.solve(R, b[: q - 1]))
        return base - B * sum(r * d for r, d in zip(rho, deltas))
    if q == 1:  # corrector, q differences (the last one to the new evaluation)
        rho = [jnp.asarray(0.5, h.dtype)]
    else:
        r_all = jnp.stack([*rks, jnp.ones((), h.dtype)])
        R = jnp.stack([r_all**j for j in range(q)])
        rho = list(jnp.linalg.solve(R, b))
    deltas = [*deltas, m_new - m_hist[0]]
    return base - B * sum(r * d for r, d in zip(rho, deltas))


class UniPC(AbstractStepSampler):
    """UniPC in data prediction: UniP-`order` predictor and the UniC corrector (one
    evaluation per step)."""

    order: int = 3
    variant: str = "bh2"

    def __init__(self, order: int = 3, variant: str = "bh2"):
        """**Arguments:** `order`: 1, 2 or 3 (the predictor's order; the corrector adds one);
        `variant`: `"bh1"` ($B(h) = -h$) or `"bh2"` ($B(h) = e^{-h} - 1$, the paper's choice
        for few steps)."""
        self.order = check_order("UniPC", order, (1, 2, 3))
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"`variant` of UniPC must be 'bh1' or 'bh2', got {variant!r}")
        self.variant = variant

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        p = self.order
        lam0, lam1 = -jnp.log(noise_level(process, ts[0])), -jnp.log(noise_level(process, ts[1]))
        lam_hist = dummy_history(lam0, lam1, p, ts.dtype)  # placeholders distinct from lam0
        # (evaluations m_0..m_{p-1}, their lambdas, the corrected state y at lam_hist[0], count)
        return (
            jnp.zeros((p, *x.shape), x.dtype),
            lam_hist,
            jnp.zeros_like(x),
            jnp.zeros((), jnp.int32),
        )

    def step(self, key, score, process, t, s, x, state):
        m_hist, lam_hist, y_prev, n = state
        p = self.order
        lam_t, lam_s = -jnp.log(noise_level(process, t)), -jnp.log(noise_level(process, s))
        y = x / process.alpha(t)
        m = denoiser(score, process)(t, x)
        # UniC for the step just taken (lam_hist[0] -> lam_t), of the predictor's order
        h_prev = lam_t - lam_hist[0]
        ratio_prev = jnp.exp(lam_hist[0] - lam_t)
        corrected = [
            _update(y_prev, ratio_prev, m_hist, lam_hist, h_prev, q, self.variant, m_new=m)
            for q in range(1, p + 1)
        ]
        y_c = jnp.where(n >= 1, select_by_order(jnp.clip(n, 1, p), corrected), y)
        # UniP from lam_t to lam_s with the new evaluation in front of the history
        m_hist = jnp.concatenate([m[None], m_hist[:-1]])
        lam_hist = jnp.concatenate([lam_t[None], lam_hist[:-1]])
        h = lam_s - lam_t
        ratio = jnp.exp(lam_t - lam_s)
        predicted = [
            _update(y_c, ratio, m_hist, lam_hist, h, q, self.variant) for q in range(1, p + 1)
        ]
        y_s = select_by_order(jnp.minimum(n + 1, p), predicted)
        return process.alpha(s) * y_s, (m_hist, lam_hist, y_c, n + 1)
