"""latentae: latent-variable models seen as stochastic autoencoders."""

from latentae import chains, compat, corruption, energy, manifold, score
from latentae.chains import GibbsResult, exact_gibbs, gibbs_chain, gsn_chain, sample_posterior
from latentae.checkpoint import CheckpointError, TrainedPair, load_checkpoint, load_pair
from latentae.conditionals import (
    MLP,
    BernoulliConditional,
    CategoricalConditional,
    Conditional,
    FlowConditional,
    GaussianConditional,
)
from latentae.corruption import Corruption
from latentae.dae import DAELoss, FitResult, LostRankError, TrainingInterrupted, fit
from latentae.data import DataError, load_table
from latentae.denoising import CorruptedEncoder, corrupt
from latentae.energy import ConservativeCheck, TiedAutoencoder, conservative_check, potential
from latentae.joint import ENCODER_METHODS, JointModel, ModelError
from latentae.langevin import (
    AnnealedLangevinResult,
    LangevinResult,
    annealed_langevin,
    geometric_sigmas,
    langevin,
)
from latentae.locking import LockedError, output_lock
from latentae.manifold import (
    Contraction,
    TangentPlane,
    contraction,
    encoder_jacobian,
    subspace_angles,
    tangent_plane,
)
from latentae.noise_conditional import (
    NoiseConditionalDAE,
    NoiseConditionalFit,
    fit_noise_conditional,
)
from latentae.sbc import SBCResult, sbc
from latentae.score import ScoreError, dae_score, model_score, reconstruction, score_error
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
    "AnnealedLangevinResult",
    "BernoulliConditional",
    "BernoulliDecoder",
    "CategoricalConditional",
    "CategoricalDecoder",
    "CheckpointError",
    "Conditional",
    "ConservativeCheck",
    "Contraction",
    "CorruptedEncoder",
    "Corruption",
    "DAELoss",
    "DataError",
    "FitResult",
    "FlowConditional",
    "FlowDecoder",
    "GaussianConditional",
    "GaussianDecoder",
    "GaussianEncoder",
    "GibbsResult",
    "JointModel",
    "LangevinResult",
    "LockedError",
    "LostRankError",
    "MixtureDecoder",
    "ModelError",
    "NoiseConditionalDAE",
    "NoiseConditionalFit",
    "SBCResult",
    "ScoreError",
    "StackResult",
    "StackedDecoder",
    "StackedEncoder",
    "StudyResult",
    "TangentPlane",
    "TiedAutoencoder",
    "TrainedPair",
    "TrainingInterrupted",
    "TwoSampleResult",
    "annealed_langevin",
    "chains",
    "compat",
    "compatibility_study",
    "conservative_check",
    "contraction",
    "corrupt",
    "corruption",
    "dae_score",
    "deep_autoencoder",
    "encoder_jacobian",
    "energy",
    "energy_distance",
    "exact_gibbs",
    "fit",
    "fit_noise_conditional",
    "geometric_sigmas",
    "gibbs_chain",
    "gsn_chain",
    "langevin",
    "load_checkpoint",
    "load_pair",
    "load_table",
    "manifold",
    "mmd2",
    "model_score",
    "output_lock",
    "potential",
    "pretrain_stack",
    "reconstruction",
    "sample_posterior",
    "sbc",
    "score",
    "score_error",
    "subspace_angles",
    "tangent_plane",
    "two_sample_test",
]

__version__ = "0.1.0"
