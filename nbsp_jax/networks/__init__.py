"""Networks: recordable hidden layers, activation capture, the SAC MLPs and the Nature CNN.

Nothing here knows about scoring or masks: :func:`record` returns activations, the method layer
(:mod:`nbsp_jax.method`) turns them into scores.
"""

from nbsp_jax.networks.capture import channel_mean, record
from nbsp_jax.networks.conv_matmul import (
    CONV_IMPLS,
    ConvSpec,
    ReLUConvMatmul,
    conv_matmul,
    extract_patches,
    gather_patches,
    resolve_conv_impl,
    s2d_kernel,
    space_to_depth,
)
from nbsp_jax.networks.injection import Injected
from nbsp_jax.networks.layers import (
    ACTIVATIONS,
    CReLUDense,
    ReLUConv,
    ReLUDense,
    dense_layer,
    hidden_widths,
    relu_stack,
)
from nbsp_jax.networks.mlp import LOG_STD_MAX, LOG_STD_MIN, GaussianActor, QNetwork
from nbsp_jax.networks.nature_cnn import KAIMING_NORMAL, NATURE_CNN, DiscreteActor, DiscreteQ

__all__ = ["ACTIVATIONS", "CONV_IMPLS", "KAIMING_NORMAL", "LOG_STD_MAX", "LOG_STD_MIN",
           "NATURE_CNN", "CReLUDense", "ConvSpec", "DiscreteActor", "DiscreteQ",
           "GaussianActor", "Injected", "QNetwork", "ReLUConv", "ReLUConvMatmul", "ReLUDense",
           "channel_mean", "conv_matmul", "dense_layer", "extract_patches", "gather_patches",
           "hidden_widths", "record", "relu_stack", "resolve_conv_impl", "s2d_kernel",
           "space_to_depth"]
