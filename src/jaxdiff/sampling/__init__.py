"""Reverse-time simulation: the reverse SDE, the probability-flow ODE, DDPM/DDIM, EDM's Heun,
DPM-Solver++, predictor–corrector, and the exact bridge and ancestral sampler."""

from .base import (
    AbstractSampler as AbstractSampler,
)
from .base import (
    AbstractStepSampler as AbstractStepSampler,
)
from .base import (
    denoiser as denoiser,
)
from .base import (
    sample as sample,
)
from .bridge import bridge as bridge
from .bridge import bridge_coefficients as bridge_coefficients
from .ddpm import DDIM as DDIM
from .ddpm import DDPM as DDPM
from .dpm_solver import DPMSolverPP as DPMSolverPP
from .edm import EDMHeun as EDMHeun
from .edm import noise_level as noise_level
from .exact import ExactSampler as ExactSampler
from .grids import (
    AbstractGrid as AbstractGrid,
)
from .grids import (
    EDMGrid as EDMGrid,
)
from .grids import (
    GeometricGrid as GeometricGrid,
)
from .grids import (
    LogSNRGrid as LogSNRGrid,
)
from .grids import (
    UniformGrid as UniformGrid,
)
from .ode import ProbabilityFlow as ProbabilityFlow
from .pc import PredictorCorrector as PredictorCorrector
from .sde import GridBrownianPath as GridBrownianPath
from .sde import ReverseSDE as ReverseSDE
from .sde import solver_nfe as solver_nfe
