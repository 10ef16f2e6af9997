"""latentae: latent-variable models seen as stochastic autoencoders."""

from latentae import chains, compat, corruption
from latentae.chains import GibbsResult, exact_gibbs, gibbs_chain, sample_posterior
from latentae.checkpoint import CheckpointError, load_checkpoint
from latentae.conditionals import (
    MLP,
    BernoulliConditional,
    CategoricalConditional,
    Conditional,
    FlowConditional,
    GaussianConditional,
)
from latentae.corruption import Corruption
from latentae.dae import DAELoss, FitResult, TrainingInterrupted, fit
from latentae.denoising import CorruptedEncoder, corrupt
from latentae.joint import ENCODER_METHODS, JointModel, ModelError
from latentae.sbc import SBCResult, sbc
from latentae.stack import (
    StackedDecoder,
    StackedEncoder,
    StackResult,
    deep_autoencoder,
    pretrain_stack,
)
from latentae.stats import TwoSampleResult, energy_distance, mmd2, two_sample_test
from latentae.study import StudyResult, compatibility_study
from latentae.units import (
    BernoulliDecoder,
    CategoricalDecoder,
    FlowDecoder,
    GaussianDecoder,
    GaussianEncoder,
    MixtureDecoder,
)

__all__ = [
    "ENCODER_METHODS",
    "MLP",
    "BernoulliConditional",
    "BernoulliDecoder",
    "CategoricalConditional",
    "CategoricalDecoder",
    "CheckpointError",
    "Conditional",
    "CorruptedEncoder",
    "Corruption",
    "DAELoss",
    "FitResult",
    "FlowConditional",
    "FlowDecoder",
    "GaussianConditional",
    "GaussianDecoder",
    "GaussianEncoder",
    "GibbsResult",
    "JointModel",
    "MixtureDecoder",
    "ModelError",
    "SBCResult",
    "StackResult",
    "StackedDecoder",
    "StackedEncoder",
    "StudyResult",
    "TrainingInterrupted",
    "TwoSampleResult",
    "chains",
    "compat",
    "compatibility_study",
    "corrupt",
    "corruption",
    "deep_autoencoder",
    "energy_distance",
    "exact_gibbs",
    "fit",
    "gibbs_chain",
    "load_checkpoint",
    "mmd2",
    "pretrain_stack",
    "sample_posterior",
    "sbc",
    "two_sample_test",
]

__version__ = "0.1.0"
