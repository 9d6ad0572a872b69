r"""Predictor–corrector sampling (Song et al. 2021, Algorithms 2–3).

Each grid step runs a predictor (one step of a step sampler, by default the reverse SDE's
Euler–Maruyama step) from `t` to `s`, then `n_corrector` Langevin steps at time `s`:

$$x \leftarrow x + \epsilon\, s(s, x) + \sqrt{2\epsilon}\, z, \qquad
\epsilon = 2 a \Big(r \frac{\|z\|}{\|s(s, x)\|}\Big)^2,$$

with the target signal-to-noise ratio $r$ (`snr`). Song et al. use $a = \alpha_i = 1 - \beta_i$
for VP and $a = 1$ for VE; on a continuous process that is the one-step signal decay
$a = (\alpha(t)/\alpha(s))^2$ (exactly 1 for VE).

The norms: Song et al. average $\|z\|$ and $\|s\|$ over the batch, which couples the samples.
Per sample (`per_sample_norms=True`) the rule is faithful but unstable in low dimension:
where a sample's score nearly vanishes (the centre of a symmetric mixture) the step blows
up. The default replaces both norms by their typical values, $\|z\|^2 \approx d$ and
$\|s\|^2 \approx d/\sigma(s)^2$ (the bound $E\|\nabla \log p_t\|^2 \le d/\sigma^2$, reached as
the data concentrate), giving $\epsilon = 2 a r^2 \sigma(s)^2$: Song et al.'s rule in the regime
where norms concentrate (high dimension), batch-independent and stable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .._checks import is_concrete
from .base import AbstractStepSampler
from .sde import ReverseSDE

Scalar = Float[ArrayLike, ""]


class PredictorCorrector(AbstractStepSampler):
    """A predictor step followed by `n_corrector` Langevin corrector steps with Song et al.'s
    SNR step rule (`1 + n_corrector` score evaluations per step with the default predictor)."""

    predictor: AbstractStepSampler
    n_corrector: int
    snr: Scalar
    per_sample_norms: bool

    def __init__(
        self,
        predictor: AbstractStepSampler = ReverseSDE(),
        n_corrector: int = 1,
        snr: Scalar = 0.16,
        *,
        per_sample_norms: bool = False,
    ):
        """**Arguments:**

        - `predictor`: a step sampler (`ReverseSDE()`, `DDPM()`, `DDIM()`, ...).
        - `n_corrector`: Langevin steps after each predictor step (`>= 0`).
        - `snr`: the target signal-to-noise ratio `r > 0` of the step rule (Song et al. use
          0.16 for VE models, 0.01 for VP ones).
        - `per_sample_norms`: use this sample's `||z||`, `||s||` in the step rule instead of
          their typical values (see the module notes).
        """
        if not isinstance(predictor, AbstractStepSampler):
            raise ValueError(
                f"`predictor` must be a step sampler (ReverseSDE(), DDPM(), ...), "
                f"got {type(predictor).__name__}"
            )
        if not isinstance(n_corrector, int) or isinstance(n_corrector, bool) or n_corrector < 0:
            raise ValueError(f"`n_corrector` must be a non-negative integer, got {n_corrector!r}")
        if is_concrete(snr) and not float(snr) > 0:
            raise ValueError(f"`snr` must be > 0, got {snr}")
        self.predictor, self.n_corrector, self.snr = predictor, n_corrector, snr
        self.per_sample_norms = bool(per_sample_norms)

    def nfe(self, steps):
        per = self.predictor.nfe(1)
        return None if per is None else steps * (per + self.n_corrector)

    def init_state(self, score, process, ts, x):
        return self.predictor.init_state(score, process, ts, x)

    def step(self, key, score, process, t, s, x, state):
        x, state = self.predictor.step(jax.random.fold_in(key, 0), score, process, t, s, x, state)
        a = jnp.exp(2 * (process.log_alpha(t) - process.log_alpha(s)))
        for j in range(self.n_corrector):  # a handful of steps: unrolled
            grad = score(s, x)
            z = jax.random.normal(jax.random.fold_in(key, j + 1), x.shape, x.dtype)
            if self.per_sample_norms:
                tiny = jnp.finfo(x.dtype).tiny
                eps = 2 * a * (self.snr * jnp.linalg.norm(z) / jnp.maximum(jnp.linalg.norm(grad), tiny)) ** 2
            else:
                eps = 2 * a * self.snr**2 * process.sigma2(s)
            x = x + eps * grad + jnp.sqrt(2 * eps) * z
        return x, state
