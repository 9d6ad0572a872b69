"""Conditional generation: labelled exact laws, linear observations with exact posteriors,
guidance as score transformations, and approximate posterior samplers."""

from .guidance import (
    AbstractConditionalScore as AbstractConditionalScore,
    ClassifierFreeGuidance as ClassifierFreeGuidance,
    ClassifierGuidance as ClassifierGuidance,
    guide as guide,
)
from .labels import (
    ExactClassifier as ExactClassifier,
    Labelled as Labelled,
    LabelledExactScore as LabelledExactScore,
)
from .network import ConditionalNetworkScore as ConditionalNetworkScore, LabelledLoss as LabelledLoss
from .observation import LinearObservation as LinearObservation, posterior_given as posterior_given
from .posterior_samplers import (
    DPS as DPS,
    DPSSampler as DPSSampler,
    PiGDM as PiGDM,
    Replacement as Replacement,
)
