"""Reverse-time simulation: the reverse SDE (Euler–Maruyama or a Diffrax solver), the
probability-flow ODE, DDPM/DDIM, EDM's Heun, DPM-Solver++, predictor–corrector, and the
exact bridge and ancestral sampler."""

from .adaptive import AdaptiveSDE as AdaptiveSDE
from .adjoint import (
    AbstractAdjoint as AbstractAdjoint,
    BackpropAdjoint as BackpropAdjoint,
    CheckpointAdjoint as CheckpointAdjoint,
)
from .base import (
    AbstractSampler as AbstractSampler,
    AbstractScoreSampler as AbstractScoreSampler,
    AbstractStepSampler as AbstractStepSampler,
    denoiser as denoiser,
    scan_steps as scan_steps,
)
from .bridge import bridge as bridge, bridge_coefficients as bridge_coefficients
from .ddpm import DDIM as DDIM, DDPM as DDPM
from .diffrax_nfe import solver_nfe as solver_nfe
from .diffrax_sde import DiffraxReverseSDE as DiffraxReverseSDE, GridBrownianPath as GridBrownianPath
from .dpm_solver import DPMSolverPP as DPMSolverPP
from .edm import EDMHeun as EDMHeun, noise_level as noise_level
from .entry import sample as sample
from .exact import ExactSampler as ExactSampler
from .grids import (
    AbstractGrid as AbstractGrid,
    EDMGrid as EDMGrid,
    GeometricGrid as GeometricGrid,
    LogSNRGrid as LogSNRGrid,
    UniformGrid as UniformGrid,
)
from .multistep import DEIS as DEIS, IPNDM as IPNDM, LMS as LMS
from .ode import ProbabilityFlow as ProbabilityFlow
from .pc import PredictorCorrector as PredictorCorrector
from .sde import ReverseSDE as ReverseSDE
from .tuning import TunedGrid as TunedGrid, TuneLog as TuneLog, tune_grid as tune_grid
from .unipc import UniPC as UniPC
