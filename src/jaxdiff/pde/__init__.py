"""The density view: Fokker–Planck equations of diffusion models on grids, and the PDE
diagnostics of the seed papers (L^p norms, entropy, Fisher information, Li–Yau).

`solve_fokker_planck(process, grid, p0, t0=..., t1=..., score=..., dynamics=...)` evolves a
density forward (`Forward()`) or backward with a score (`Reverse()`, `Flow()`).
"""

from .diagnostics import (
    entropy as entropy,
)
from .diagnostics import (
    fisher_information as fisher_information,
)
from .diagnostics import (
    histogram as histogram,
)
from .diagnostics import (
    kde as kde,
)
from .diagnostics import (
    l1_distance as l1_distance,
)
from .diagnostics import (
    li_yau as li_yau,
)
from .diagnostics import (
    lp_norm as lp_norm,
)
from .diagnostics import (
    mass as mass,
)
from .diagnostics import (
    particle_discrepancy as particle_discrepancy,
)
from .diagnostics import (
    relative_entropy as relative_entropy,
)
from .dynamics import AbstractDynamics as AbstractDynamics
from .dynamics import Flow as Flow
from .dynamics import Forward as Forward
from .dynamics import Reverse as Reverse
from .grid import Grid as Grid
from .heat import HeatFlow as HeatFlow
from .operators import (
    AbstractDiffusion as AbstractDiffusion,
)
from .operators import (
    AbstractLimiter as AbstractLimiter,
)
from .operators import (
    Implicit as Implicit,
)
from .operators import (
    Minmod as Minmod,
)
from .operators import (
    MonotonizedCentral as MonotonizedCentral,
)
from .operators import (
    Spectral as Spectral,
)
from .operators import (
    Upwind as Upwind,
)
from .operators import (
    VanLeer as VanLeer,
)
from .operators import (
    advection as advection,
)
from .operators import (
    laplacian as laplacian,
)
from .solve import (
    IMEX as IMEX,
)
from .solve import (
    CFLStepSize as CFLStepSize,
)
from .solve import (
    FokkerPlanckTerm as FokkerPlanckTerm,
)
from .solve import (
    solve_fokker_planck as solve_fokker_planck,
)
