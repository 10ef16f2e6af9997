"""latentae: latent-variable models seen as stochastic autoencoders."""

from latentae.chains import sample_posterior
from latentae.conditionals import (
    MLP,
    BernoulliConditional,
    CategoricalConditional,
    Conditional,
    FlowConditional,
    GaussianConditional,
)
from latentae.joint import ENCODER_METHODS, JointModel, ModelError
from latentae.sbc import SBCResult, sbc

__all__ = [
    "ENCODER_METHODS",
    "MLP",
    "BernoulliConditional",
    "CategoricalConditional",
    "Conditional",
    "FlowConditional",
    "GaussianConditional",
    "JointModel",
    "ModelError",
    "SBCResult",
    "sample_posterior",
    "sbc",
]

__version__ = "0.1.0"
