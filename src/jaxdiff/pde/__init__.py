"""The density view: Fokker–Planck equations of diffusion models on grids, and the PDE
diagnostics of the seed papers (L^p norms, entropy, Fisher information, Li–Yau).

`solve_fokker_planck(process, grid, p0, t0=..., t1=..., score=..., dynamics=...)` evolves a
density forward (`Forward()`) or backward with a score (`Reverse()`, `Flow()`).
"""

from .continuity import solve_continuity as solve_continuity
from .diagnostics import (
    entropy as entropy,
    fisher_information as fisher_information,
    histogram as histogram,
    kde as kde,
    l1_distance as l1_distance,
    li_yau as li_yau,
    lp_norm as lp_norm,
    mass as mass,
    particle_discrepancy as particle_discrepancy,
    relative_entropy as relative_entropy,
)
from .dynamics import (
    AbstractDynamics as AbstractDynamics,
    Flow as Flow,
    Forward as Forward,
    Reverse as Reverse,
)
from .grid import Grid as Grid
from .heat import HeatFlow as HeatFlow
from .operators import (
    AbstractDiffusion as AbstractDiffusion,
    AbstractLimiter as AbstractLimiter,
    Implicit as Implicit,
    Minmod as Minmod,
    MonotonizedCentral as MonotonizedCentral,
    Spectral as Spectral,
    Upwind as Upwind,
    VanLeer as VanLeer,
    advection as advection,
    laplacian as laplacian,
)
from .solve import (
    IMEX as IMEX,
    CFLStepSize as CFLStepSize,
    FokkerPlanckTerm as FokkerPlanckTerm,
    solve_fokker_planck as solve_fokker_planck,
)
