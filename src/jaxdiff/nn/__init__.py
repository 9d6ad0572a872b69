"""Equinox score networks: `model(c, x)` on one sample, `c` the noise conditioning."""

from .embeddings import FourierFeatures as FourierFeatures
from .mlp import MLP as MLP
from .unet import UNet as UNet
