"""Load and validate float/int8 ONNX model pairs, pair their tensors, run them."""

from .graph import QuantParams
from .pair import ModelPair, TensorSpec, load_model, load_pair
from .tensormap import (
           TensorMap,
           TensorPair,
           Unmatched,
           build_tensor_map,
           check_one_network,
)

__all__ = ["ModelPair", "QuantParams", "TensorMap", "TensorPair", "TensorSpec", "Unmatched",
           "build_tensor_map", "check_one_network", "load_model", "load_pair"]
