"""jaxdiff: a JAX-accelerated, differentiable simulator of score-based diffusion models.

Two views of one dynamics: particles (forward noising, reverse-time sampling) and densities
(the Fokker–Planck equation on a grid), with exact references wherever the mathematics
gives them. The layout of the package is described in docs/architecture.md.
"""

# Foundation: laws, forward processes and their reverse-time dynamics, scores
from .distributions import (
    AbstractLaw as AbstractLaw,
    Gaussian as Gaussian,
    GaussianMixture as GaussianMixture,
    NoisedLaw as NoisedLaw,
    PointCloud as PointCloud,
    Posterior as Posterior,
)
from .processes import (
    OU as OU,
    VE as VE,
    VP as VP,
    AbstractProcess as AbstractProcess,
    CosineVP as CosineVP,
    SubVP as SubVP,
    default_t_end as default_t_end,
    reverse_coefficients as reverse_coefficients,
    reverse_drift as reverse_drift,
)
from .scores import (
    AbstractScore as AbstractScore,
    ExactScore as ExactScore,
    tweedie_denoise as tweedie_denoise,
)

# Sampling
from . import sampling as sampling
from .sampling import (
    AbstractAdjoint as AbstractAdjoint,
    BackpropAdjoint as BackpropAdjoint,
    CheckpointAdjoint as CheckpointAdjoint,
    DDIM as DDIM,
    DDPM as DDPM,
    AbstractGrid as AbstractGrid,
    AbstractSampler as AbstractSampler,
    AbstractScoreSampler as AbstractScoreSampler,
    AbstractStepSampler as AbstractStepSampler,
    DiffraxReverseSDE as DiffraxReverseSDE,
    DPMSolverPP as DPMSolverPP,
    EDMGrid as EDMGrid,
    EDMHeun as EDMHeun,
    ExactSampler as ExactSampler,
    GeometricGrid as GeometricGrid,
    LogSNRGrid as LogSNRGrid,
    PredictorCorrector as PredictorCorrector,
    ProbabilityFlow as ProbabilityFlow,
    ReverseSDE as ReverseSDE,
    UniformGrid as UniformGrid,
    sample as sample,
)

# Few-step sampling: high-order multistep samplers, learned time grids, adaptive SDE
from .sampling import (
    DEIS as DEIS,
    AdaptiveSDE as AdaptiveSDE,
    IPNDM as IPNDM,
    LMS as LMS,
    TunedGrid as TunedGrid,
    TuneLog as TuneLog,
    UniPC as UniPC,
    tune_grid as tune_grid,
)

# Learning: likelihood, losses, network scores, training
from .likelihood import (
    AbstractDivergence as AbstractDivergence,
    ExactDivergence as ExactDivergence,
    Hutchinson as Hutchinson,
    log_likelihood as log_likelihood,
)
from .losses import (
    AbstractLoss as AbstractLoss,
    AbstractTimeSampler as AbstractTimeSampler,
    AbstractWeighting as AbstractWeighting,
    DSMLoss as DSMLoss,
    EDMWeighting as EDMWeighting,
    LikelihoodImportanceTime as LikelihoodImportanceTime,
    LikelihoodWeighting as LikelihoodWeighting,
    LogNormalTime as LogNormalTime,
    SigmaSquaredWeighting as SigmaSquaredWeighting,
    SlicedScoreMatchingLoss as SlicedScoreMatchingLoss,
    UniformTime as UniformTime,
    dsm_loss as dsm_loss,
    dsm_minimum as dsm_minimum,
    fisher_divergence as fisher_divergence,
    sliced_score_matching_loss as sliced_score_matching_loss,
)
from .network_score import (
    AbstractParametrisation as AbstractParametrisation,
    EDMParam as EDMParam,
    EpsParam as EpsParam,
    NetworkScore as NetworkScore,
    ScoreParam as ScoreParam,
    VParam as VParam,
    X0Param as X0Param,
)
from .checkpoint import CheckpointError as CheckpointError
from .training import (
    TrainLog as TrainLog,
    load_checkpoint as load_checkpoint,
    save_checkpoint as save_checkpoint,
    train as train,
)

# Conditional generation
from . import conditional as conditional
from .conditional import (
    DPS as DPS,
    AbstractConditionalScore as AbstractConditionalScore,
    ClassifierFreeGuidance as ClassifierFreeGuidance,
    ClassifierGuidance as ClassifierGuidance,
    ConditionalNetworkScore as ConditionalNetworkScore,
    DPSSampler as DPSSampler,
    ExactClassifier as ExactClassifier,
    Labelled as Labelled,
    LabelledExactScore as LabelledExactScore,
    LinearObservation as LinearObservation,
    PiGDM as PiGDM,
    Replacement as Replacement,
    guide as guide,
    posterior_given as posterior_given,
)

# Flow matching: interpolants, velocities, couplings
from .flow_matching import (
    AbstractCoupling as AbstractCoupling,
    FlowMatchingLoss as FlowMatchingLoss,
    IndependentCoupling as IndependentCoupling,
    OTCoupling as OTCoupling,
    PairedCoupling as PairedCoupling,
    flow_pairs as flow_pairs,
    reflow as reflow,
)
from .interpolants import (
    AbstractInterpolant as AbstractInterpolant,
    CosineInterpolant as CosineInterpolant,
    LinearInterpolant as LinearInterpolant,
)
from .velocity import (
    AbstractVelocity as AbstractVelocity,
    ExactVelocity as ExactVelocity,
    NetworkVelocity as NetworkVelocity,
    VelocityParam as VelocityParam,
    VelocityScore as VelocityScore,
)

# The density view (jaxdiff.pde), networks (jaxdiff.nn), metrics, data and parallel helpers
# are subpackages imported on first use (see __getattr__ below).

__version__ = "0.1.0"


def __getattr__(name):  # lazy subpackages keep `import jaxdiff` fast
    import importlib

    if name in ("pde", "nn", "metrics", "data", "parallel"):
        return importlib.import_module(f".{name}", __name__)
    if name == "solve_continuity":  # the flow-matching density solve lives in jaxdiff.pde
        return importlib.import_module(".pde", __name__).solve_continuity
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")
