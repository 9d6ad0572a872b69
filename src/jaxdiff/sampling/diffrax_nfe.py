"""Vector-field evaluations of Diffrax solvers on a fixed grid, from a table.

Diffrax does not publish an evaluation count, so the counts of the solvers we name are
written here (first-same-as-last stages counted once) rather than read from their
tableaux' internals. Any other solver gives `None` ("not known in advance").
"""

from __future__ import annotations

import diffrax

# solver class: (evaluations per step, first-same-as-last: the last stage is the next first)
_EVALUATIONS: dict[type, tuple[int, bool]] = {
    diffrax.Euler: (1, False),
    diffrax.EulerHeun: (1, False),
    diffrax.Heun: (2, False),
    diffrax.Midpoint: (2, False),
    diffrax.Ralston: (2, False),
    diffrax.Bosh3: (4, True),
    diffrax.Tsit5: (7, True),
    diffrax.Dopri5: (7, True),
    diffrax.Dopri8: (14, True),
    # stochastic Runge-Kutta: drift evaluations per step
    diffrax.SEA: (1, False),
    diffrax.ShARK: (2, False),
    diffrax.SRA1: (2, False),
    diffrax.GeneralShARK: (2, False),
    diffrax.SlowRK: (2, False),
    diffrax.SPaRK: (3, False),
}


def solver_nfe(solver: diffrax.AbstractSolver, steps: int) -> int | None:
    """Vector-field evaluations of `solver` for `steps` fixed steps (`None` if not tabulated)."""
    entry = _EVALUATIONS.get(type(solver))
    if entry is None:
        return None
    per_step, fsal = entry
    return (per_step - 1) * steps + 1 if fsal else per_step * steps
