"""Model families the field studies; every model maps raw inputs to logits."""

from .cnn import MadryCNN, SmallCNN
from .detector import ConfidenceDetector
from .ensemble import Ensemble
from .linear import LogisticRegression, SoftmaxRegression
from .mlp import MLP, MaxoutNet
from .preprocess import BPDA, PREPROCESSORS, JPEGLike, MedianFilter, Preprocessed, Quantize, build_preprocessor
from .rbf import RBFNet
from .resnet import PreActResNet18, ResNet18, WideResNet
from .registry import MODELS, build_from_spec, build_model, model_options, model_spec
from .stochastic import EOT, Randomized
from .transforms import (TRANSFORMS, Compose, GaussianNoise, RandomAffine, RandomResizePad, UniformNoise,
                         affine_transform, build_transform)
from .wrappers import Normalized

MODEL_NAMES = tuple(MODELS)

__all__ = ["BPDA", "Compose", "ConfidenceDetector", "EOT", "Ensemble", "GaussianNoise", "JPEGLike", "LogisticRegression", "MLP", "MODELS",
           "MODEL_NAMES", "MadryCNN", "MaxoutNet", "MedianFilter", "Normalized", "PREPROCESSORS", "PreActResNet18", "Preprocessed",
           "Quantize", "RBFNet", "ResNet18", "RandomAffine", "RandomResizePad", "Randomized", "SmallCNN", "SoftmaxRegression",
           "TRANSFORMS", "UniformNoise", "WideResNet", "affine_transform", "build_from_spec", "build_model", "build_preprocessor",
           "build_transform", "model_options", "model_spec"]
