r"""The probability-flow ODE, solved with any Diffrax ODE solver.

$$\frac{dx}{dt} = f(t)\,x - \tfrac12 g(t)^2\, s(t, x),$$

integrated in ordinary time from `t0 = T` down to `t1 = t_end` (Diffrax allows `t1 < t0`),
so the score is always called at the true time `t`. The vector field is
`-jaxdiff.reverse_drift(process, score, t, x, noise=0.0)`, or the velocity of a velocity
field, or for an interpolant the velocity from the denoiser (`jaxdiff.velocity.velocity_of`).
Its flow map transports the marginals $p_T \to p_{t_\mathrm{end}}$ exactly (Song et al.
2021); errors come from the solver alone.
"""

from __future__ import annotations

import diffrax

from ..velocity import velocity_of
from .adjoint import as_diffrax_adjoint
from .base import AbstractScoreSampler
from .diffrax_nfe import solver_nfe


class ProbabilityFlow(AbstractScoreSampler):
    """Deterministic sampling through the probability-flow ODE.

    `stepsize_controller=None` (default) steps exactly on the grid (`diffrax.StepTo(ts)`);
    an adaptive controller such as `diffrax.PIDController(rtol=1e-5, atol=1e-5)` chooses its
    own steps for each sample (then `steps` only sets the saved times of a trajectory).
    """

    solver: diffrax.AbstractSolver
    stepsize_controller: diffrax.AbstractStepSizeController | None
    max_steps: int

    def __init__(
        self,
        solver: diffrax.AbstractSolver = diffrax.Tsit5(),
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        max_steps: int = 4096,
    ):
        """**Arguments:**

        - `solver`: a Diffrax ODE solver (`Euler()`, `Heun()`, `Tsit5()`, `Dopri5()`, ...).
        - `stepsize_controller`: `None` for the fixed grid, or a Diffrax controller.
        - `max_steps`: the cap on adaptive steps (ignored on a fixed grid).
        """
        if not isinstance(solver, diffrax.AbstractSolver):
            raise ValueError(f"`solver` must be a Diffrax solver, got {type(solver).__name__}")
        if stepsize_controller is not None and not isinstance(
            stepsize_controller, diffrax.AbstractStepSizeController
        ):
            raise ValueError(
                f"`stepsize_controller` must be None or a Diffrax step-size controller, "
                f"got {type(stepsize_controller).__name__}"
            )
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}")
        self.solver = solver
        self.stepsize_controller = stepsize_controller
        self.max_steps = max_steps

    def nfe(self, steps):
        return solver_nfe(self.solver, steps) if self.stepsize_controller is None else None

    def integrate(self, key, score, process, ts, x, *, trajectory, adjoint):
        event = x.shape
        # -reverse_drift(..., noise=0), or a velocity field's own velocity, or an
        # interpolant's velocity through the denoiser (finite at T, where alpha = 0)
        velocity = velocity_of(score, process)

        def vf(t, y, args):
            return velocity(t, y.reshape(event)).reshape(-1)

        if self.stepsize_controller is None:
            controller, dt0, max_steps = diffrax.StepTo(ts), None, ts.shape[0] - 1
        elif isinstance(self.stepsize_controller, diffrax.AbstractAdaptiveStepSizeController):
            controller, dt0, max_steps = self.stepsize_controller, None, self.max_steps
        else:
            controller, dt0, max_steps = self.stepsize_controller, ts[1] - ts[0], self.max_steps
        saveat = diffrax.SaveAt(ts=ts) if trajectory else diffrax.SaveAt(t1=True)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), self.solver, ts[0], ts[-1], dt0, x.reshape(-1),
            stepsize_controller=controller, saveat=saveat, max_steps=max_steps,
            adjoint=as_diffrax_adjoint(adjoint),
        )  # fmt: skip
        if trajectory:
            return sol.ys.reshape((ts.shape[0], *event))
        return sol.ys[0].reshape(event)
