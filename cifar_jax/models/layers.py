"""The pieces every model here is built of: PyTorch's default init and torchvision's,
BatchNorm with PyTorch's semantics, the width rule, conv / conv-norm-activation / classifier
helpers, and the pools torchvision's models use.

The helpers are functions called inside a module's `@nn.compact` method: the `nn.Conv`,
norm and `nn.Dense` modules they create belong to that caller, named as given (the zoo's
torchvision names: `layer1_0_conv1`, `features_3_conv_1_1`) or, unnamed, as Flax names them
(`Conv_0`, `BatchNorm_0`: ResNet9's tree, docs/models.md "The parameter-tree contract").

A model fixes its settings once and hands the result to its blocks, as flax's
examples/imagenet does with `conv = partial(nn.Conv, ...)`:

    conv_bn = functools.partial(layers.conv_bn, norm=self.norm, dtype=self.dtype)
    y = conv_bn(x, 64, 3, train, mask, act=nn.relu, name="layer1_0_conv1", norm_name="layer1_0_bn1")

`norm` is any module class (or partial) constructed with at most a `name` and called as
`norm(name=...)(x, train, mask)`; `BatchNorm` below is the default.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., jax.Array]
# A norm layer: `norm(name=...)` is a module called as `(x, train, mask)` (see BatchNorm).
Norm = Callable[..., nn.Module]
# Padding of one conv: an int (the same on every side) or ((top, bottom), (left, right)).
Padding = Union[int, Sequence[tuple[int, int]]]

# torchvision's kaiming_normal_(mode="fan_out") (nonlinearity relu, or the default
# leaky_relu with a=0: the same gain sqrt(2)) for the convs of its models; biases zero.
FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# A model's `initialization`: PyTorch's defaults (layers' own: torch_uniform) or torchvision's.
INITIALIZATIONS = ("pytorch", "torchvision")
# A model's `stem`: stride 1 and no early pooling, for 32x32 inputs, or torchvision's.
STEMS = ("cifar", "imagenet")


def conv_kernel_init(initialization: str) -> Optional[Initializer]:
    """The conv weights' initializer of a model's `initialization`: None for "pytorch" (`conv`'s
    default, PyTorch's, weights and biases alike), FAN_OUT for "torchvision" (biases then zero)."""
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization={initialization!r}: use one of {', '.join(INITIALIZATIONS)}")
    return FAN_OUT if initialization == "torchvision" else None


def imagenet_stem(stem: str) -> bool:
    """Whether a model's `stem` is torchvision's ("imagenet") rather than "cifar"."""
    if stem not in STEMS:
        raise ValueError(f"stem={stem!r}: use one of {', '.join(STEMS)}")
    return stem == "imagenet"


def torch_uniform(fan_in: int) -> Initializer:
    """PyTorch's default Conv/Linear init: weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (kaiming_uniform with a=sqrt(5) reduces to this bound for the weights.)
    """
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def scaled(channels: int, width: float, divisor: int = 1) -> int:
    """`channels * width`, rounded to a multiple of `divisor` (torchvision's
    _make_divisible for divisor > 1: never more than 10 % below the exact value).

    The width rule of every model but ResNet9, whose rule is the seed's
    (cifar_jax.models.resnet9.seed_channels)."""
    exact = channels * width
    value = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if value < 0.9 * exact:
        value += divisor
    return max(1, value)


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch semantics.

    `momentum` is PyTorch's (new = (1 - m) * old + m * batch); the running variance
    is updated with the unbiased batch variance while the batch is normalised with
    the biased one, as torch does. `mask` (N,) excludes padded examples from the
    batch statistics, so a padded last batch behaves like the short batch it stands for.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool, mask: Optional[jax.Array] = None):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        if train:
            xf = x.astype(jnp.float32)
            axes = tuple(range(x.ndim - 1))
            per_example = math.prod(x.shape[1:-1])
            if mask is None:
                count = x.shape[0] * per_example
                mean = jnp.mean(xf, axes)
                var = jnp.mean(jnp.square(xf - mean), axes)
            else:
                weight = mask.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
                count = jnp.sum(weight) * per_example
                mean = jnp.sum(xf * weight, axes) / count
                var = jnp.sum(jnp.square(xf - mean) * weight, axes) / count
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1, 1)
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value

        inv = jax.lax.rsqrt(var + self.epsilon) * scale
        return ((x - mean) * inv + bias).astype(x.dtype)


def conv(x, features: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
         dtype: Any = jnp.float32, kernel_init: Optional[Initializer] = None,
         name: Optional[str] = None, *, padding: Optional[Padding] = None,
         bias_init: Optional[Initializer] = None):
    """A PyTorch Conv2d (kernel x kernel, `groups`, optional bias) applied to NHWC `x`.

    `padding` defaults to (kernel - 1) // 2 on every side ("same" for odd kernels at
    stride 1); pass it for anything else. The default init is PyTorch's,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias; with a `kernel_init` given, the
    bias defaults to zeros (torchvision's custom inits); `bias_init` overrides either.
    """
    fan_in = x.shape[-1] // groups * kernel * kernel
    if padding is None:
        padding = (kernel - 1) // 2
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    if bias_init is None:
        bias_init = nn.initializers.zeros if kernel_init else torch_uniform(fan_in)
    return nn.Conv(
        features, (kernel, kernel), strides=stride, padding=padding,
        feature_group_count=groups, use_bias=bias, dtype=dtype,
        kernel_init=kernel_init or torch_uniform(fan_in), bias_init=bias_init, name=name,
    )(x)


def conv_bn(x, features: int, kernel: int, train: bool, mask, stride: int = 1, groups: int = 1,
            dtype: Any = jnp.float32, kernel_init: Optional[Initializer] = None,
            act: Optional[Callable] = None, name: Optional[str] = None, *, bias: bool = False,
            padding: Optional[Padding] = None, norm: Norm = BatchNorm, norm_name: Optional[str] = None):
    """`conv` -> `norm` [-> `act`], the unit these networks are built of (torchvision's
    Conv2dNormActivation).

    `name` names the conv and `norm_name` the norm; either left None is named by Flax
    (`Conv_0`, `BatchNorm_0`, ... in the caller). `mask` (N,) or None is passed to the norm
    (see BatchNorm).
    """
    y = conv(x, features, kernel, stride, groups, bias=bias, dtype=dtype, kernel_init=kernel_init,
             name=name, padding=padding)
    y = norm(name=norm_name)(y, train, mask)
    return act(y) if act is not None else y


def linear(x, features: int, dtype: Any = jnp.float32, kernel_init: Optional[Initializer] = None,
           bias_init: Optional[Initializer] = None, name: Optional[str] = None):
    """A PyTorch Linear on (N, in) `x`: PyTorch's default init, U(-1/sqrt(in), 1/sqrt(in)) for
    weight and bias, unless given."""
    fan_in = x.shape[-1]
    return nn.Dense(features, dtype=dtype, kernel_init=kernel_init or torch_uniform(fan_in),
                    bias_init=bias_init or torch_uniform(fan_in), name=name)(x)


def classifier(x, num_classes: int, dtype: Any = jnp.float32, kernel_init: Optional[Initializer] = None,
               bias_init: Optional[Initializer] = None, name: str = "classifier"):
    """The final Linear (PyTorch's default init unless given) on (N, features) `x`; float32 logits."""
    return linear(x, num_classes, dtype, kernel_init, bias_init, name).astype(jnp.float32)


def max_pool(x, size: int = 2):
    """`size` x `size` max-pool at stride `size` (PyTorch's MaxPool2d(size)), NHWC."""
    return nn.max_pool(x, (size, size), strides=(size, size))


def stem_max_pool(x):
    """torchvision ResNet's MaxPool2d(3, stride=2, padding=1): flax pads with -inf, as PyTorch does."""
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


def stochastic_depth(y, rate: float, rng: jax.Array):
    """torchvision's StochasticDepth(rate, "row") in training: each example's residual
    branch `y` is dropped with probability `rate`, the kept ones scaled by 1 / (1 - rate)."""
    keep = 1.0 - rate
    alive = jax.random.bernoulli(rng, keep, (y.shape[0],) + (1,) * (y.ndim - 1))
    return y * alive.astype(y.dtype) / jnp.asarray(keep, y.dtype)
