"""Model families the field studies; every model maps raw inputs to logits."""

from .cnn import MadryCNN, SmallCNN
from .ensemble import Ensemble
from .linear import LogisticRegression, SoftmaxRegression
from .mlp import MLP, MaxoutNet
from .rbf import RBFNet
from .registry import MODELS, build_from_spec, build_model, model_options, model_spec
from .wrappers import Normalized

MODEL_NAMES = tuple(MODELS)

__all__ = ["MODELS", "MODEL_NAMES", "Ensemble", "LogisticRegression", "MLP", "MadryCNN", "MaxoutNet",
           "Normalized", "RBFNet", "SmallCNN", "SoftmaxRegression", "build_from_spec", "build_model",
           "model_options", "model_spec"]
