r"""The three density dynamics of a diffusion model, as strategy objects.

Each is a Fokker–Planck equation $\partial_s p = -\mathrm{div}(b\,p) + \tfrac{a}{2}\Delta p$ in
its own running time $s \ge 0$, with a drift that is linear in the position and in the
score, $b(t, x) = c_x(t)\, x + c_s(t)\, s_\theta(t, x)$, and an isotropic diffusion $a(t)$:

| dynamics | runs | $c_x$ | $c_s$ | $a$ |
|---|---|---|---|---|
| `Forward()` | $t = t_0 + s$ | $f(t)$ | $0$ | $g(t)^2$ |
| `Reverse(noise=1)` | $t = t_0 - s$ | $-f(t)$ | $\frac{1 + \lambda^2}{2} g(t)^2$ | $\lambda^2 g(t)^2$ |
| `Flow()` | $t = t_0 - s$ | $-f(t)$ | $\frac12 g(t)^2$ | $0$ |

`Reverse(noise=1)` is the reverse SDE in reverse time $\tau = T - t$, `Flow()` the
probability-flow ODE; `Reverse(noise=lam)` is the family with the same marginals for the
exact score (`noise=0` is the flow); their coefficients are `jaxdiff.reverse_coefficients`,
the same that drive the samplers. Named so as not to clash with the samplers
(`jd.ReverseSDE`, `jd.ProbabilityFlow`).
"""

import abc

import equinox as eqx
from equinox import AbstractClassVar
from jaxtyping import Array, Float

from ..processes import AbstractProcess, reverse_coefficients


class AbstractDynamics(eqx.Module):
    """A Fokker–Planck dynamics `dp/ds = -div(b p) + (a/2) Laplacian p` built from a process
    and (for the reverse dynamics) a score, with `b = c_x(t) x + c_s(t) score(t, x)`."""

    # +1: runs forward in the process time t (t = t0 + s); -1: backward (t = t0 - s).
    direction: AbstractClassVar[int]
    # Static facts that let the solver skip work: does the drift use the score, is a = 0.
    uses_score: AbstractClassVar[bool]
    has_diffusion: AbstractClassVar[bool]

    @abc.abstractmethod
    def coefficients(
        self, process: AbstractProcess, t: Float[Array, ""]
    ) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
        """`(c_x, c_s, a)` at process time `t`."""


class Forward(AbstractDynamics):
    """The forward (noising) Fokker–Planck equation `dp/dt = -div(f x p) + (g^2/2) Laplacian p`."""

    direction = 1
    uses_score = False
    has_diffusion = True

    def coefficients(self, process, t):
        return process.f(t), 0.0 * t, process.g2(t)


class Reverse(AbstractDynamics):
    r"""The reverse-time SDE family in $\tau = T - t$:
    $dY = [-f Y + \frac{1 + \lambda^2}{2} g^2 s(t, Y)]\,d\tau + \lambda g\,dW$, whose
    density solves $\partial_\tau q = -\mathrm{div}(b q) + \frac{\lambda^2 g^2}{2}\Delta q$.

    `noise = 1` (the default) is the reverse SDE of Anderson / Song et al.
    """

    noise: float | Float[Array, ""] = 1.0

    direction = -1
    uses_score = True
    has_diffusion = True

    def __init__(self, noise: float | Float[Array, ""] = 1.0):
        """**Arguments:** `noise`: the factor `lambda >= 0` on the reverse noise `g dW`."""
        if isinstance(noise, (int, float)) and not noise >= 0:
            raise ValueError(f"`noise` must be >= 0, got {noise}")
        self.noise = noise

    def coefficients(self, process, t):
        return reverse_coefficients(process, t, noise=self.noise)


class Flow(AbstractDynamics):
    r"""The probability-flow ODE in reverse time: $dY/d\tau = -f Y + \frac12 g^2 s(t, Y)$;
    its density is transported, $\partial_\tau q = -\mathrm{div}(b q)$ (no diffusion)."""

    direction = -1
    uses_score = True
    has_diffusion = False

    def coefficients(self, process, t):
        return reverse_coefficients(process, t, noise=0.0)
