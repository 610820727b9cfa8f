"""Shared by the ImageNet ports: torchvision's conv init, conv + norm under torchvision's
module names, its stem max-pool, and PyTorch's adaptive average pooling.

Every parameterised layer of these models is a direct child of the model, named after its
torchvision module path with "." replaced by "_" (`layer1.0.conv1` -> `layer1_0_conv1`,
`features.3.conv.1.0` -> `features_3_conv_1_0`); only the final Linear is renamed
"classifier" (the zoo's head key). That is how cifar_jax.pretrained maps a torchvision
state_dict onto the variables without a per-model table.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cifar_jax.models import layers

# torchvision's kaiming_normal_(mode="fan_out") (nonlinearity relu, or the default
# leaky_relu with a=0: the same gain sqrt(2)) for every conv of these models; biases zero.
FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv_norm(x, features: int, kernel: int, train: bool, mask, *, conv_name: str, norm_name: str,
              norm: layers.Norm, dtype: Any, stride: int = 1, groups: int = 1,
              act: Optional[Callable] = None):
    """torchvision's Conv2d(bias=False, padding=(kernel-1)//2 on every side) -> norm [-> act]
    (Conv2dNormActivation), with the conv and the norm named as given."""
    y = layers.conv(x, features, kernel, stride, groups, dtype=dtype, kernel_init=FAN_OUT, name=conv_name)
    y = norm(name=norm_name)(y, train, mask)
    return act(y) if act is not None else y


def stem_max_pool(x):
    """MaxPool2d(3, stride=2, padding=1): flax pads with -inf, as PyTorch does."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def _bins(size: int, out: int) -> np.ndarray:
    """(out, size) averaging matrix of torch's adaptive pooling along one axis: bin i
    covers [floor(i * size / out), ceil((i + 1) * size / out))."""
    matrix = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x, out: tuple[int, int]):
    """PyTorch's AdaptiveAvgPool2d(out) on NHWC `x`; bins may overlap, and a map smaller
    than `out` is replicated (a 1x1 map becomes `out` copies of itself)."""
    h, w = x.shape[1:3]
    if (h, w) == tuple(out):
        return x
    rows, cols = _bins(h, out[0]), _bins(w, out[1])
    return jnp.einsum("ih,nhwc,jw->nijc", rows.astype(x.dtype), x, cols.astype(x.dtype))
