"""Reverse-time simulation: the reverse SDE, the probability-flow ODE, DDPM/DDIM, EDM's Heun,
DPM-Solver++, predictor–corrector, and the exact bridge and ancestral sampler."""

from .base import (
    AbstractSampler as AbstractSampler,
    AbstractStepSampler as AbstractStepSampler,
    denoiser as denoiser,
    sample as sample,
)
from .bridge import bridge as bridge, bridge_coefficients as bridge_coefficients
from .ddpm import DDIM as DDIM, DDPM as DDPM
from .dpm_solver import DPMSolverPP as DPMSolverPP
from .edm import EDMHeun as EDMHeun, noise_level as noise_level
from .exact import ExactSampler as ExactSampler
from .grids import (
    AbstractGrid as AbstractGrid,
    EDMGrid as EDMGrid,
    GeometricGrid as GeometricGrid,
    LogSNRGrid as LogSNRGrid,
    UniformGrid as UniformGrid,
)
from .ode import ProbabilityFlow as ProbabilityFlow
from .pc import PredictorCorrector as PredictorCorrector
from .sde import GridBrownianPath as GridBrownianPath, ReverseSDE as ReverseSDE, solver_nfe as solver_nfe
