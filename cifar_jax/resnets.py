"""CIFAR ResNet18/50/152 and VGG16 (with BatchNorm) as Flax linen modules.

They follow kuangliu/pytorch-cifar (models/resnet.py, models/vgg.py), the usual CIFAR
adaptation: a stride-1 3x3 stem, no early max-pool, global average pooling of the final
4x4 map, one Linear classifier. PyTorch's default init (cifar_jax.models._torch_uniform),
cifar_jax.models.BatchNorm. `width` scales every channel count (1.0 is the published
model); `dtype` is the compute dtype, logits are float32.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cifar_jax.models import BatchNorm, _torch_uniform


def scaled(channels: int, width: float, divisor: int = 1) -> int:
    """`channels * width`, rounded to a multiple of `divisor` (torchvision's
    _make_divisible for divisor > 1: never more than 10 % below the exact value)."""
    exact = channels * width
    value = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if value < 0.9 * exact:
        value += divisor
    return max(1, value)


def conv(x, features: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False,
         dtype=jnp.float32, kernel_init=None, name: Optional[str] = None):
    """A PyTorch Conv2d (padding (kernel - 1) // 2) applied to NHWC `x`; default init is
    PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    fan_in = x.shape[-1] // groups * kernel * kernel
    pad = (kernel - 1) // 2
    return nn.Conv(
        features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
        feature_group_count=groups, use_bias=bias, dtype=dtype,
        kernel_init=kernel_init or _torch_uniform(fan_in),
        bias_init=nn.initializers.zeros if kernel_init else _torch_uniform(fan_in), name=name,
    )(x)


def conv_bn(x, features: int, kernel: int, train: bool, mask, stride: int = 1, groups: int = 1,
            dtype=jnp.float32, kernel_init=None, act=None, name: Optional[str] = None):
    """`conv` (no bias) -> BatchNorm [-> `act`], the unit these networks are built of."""
    y = BatchNorm()(conv(x, features, kernel, stride, groups, dtype=dtype, kernel_init=kernel_init, name=name),
                    train, mask)
    return act(y) if act is not None else y


def classifier(x, num_classes: int, dtype):
    """Linear head with PyTorch's default init; float32 logits."""
    fan_in = x.shape[-1]
    logits = nn.Dense(num_classes, dtype=dtype, kernel_init=_torch_uniform(fan_in),
                      bias_init=_torch_uniform(fan_in), name="classifier")(x)
    return logits.astype(jnp.float32)


def _shortcut(x, features: int, stride: int, train: bool, mask, dtype):
    """Identity, or a strided 1x1 conv + BatchNorm where the block changes shape."""
    if stride == 1 and x.shape[-1] == features:
        return x
    return conv_bn(x, features, 1, train, mask, stride, dtype=dtype)


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        dt = self.dtype
        y = conv_bn(x, self.planes, 3, train, mask, self.stride, dtype=dt, act=nn.relu)
        y = conv_bn(y, self.planes, 3, train, mask, dtype=dt)
        return nn.relu(_shortcut(x, self.planes, self.stride, train, mask, dt) + y)


class Bottleneck(nn.Module):
    planes: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        dt, out = self.dtype, self.planes * self.expansion
        y = conv_bn(x, self.planes, 1, train, mask, dtype=dt, act=nn.relu)
        y = conv_bn(y, self.planes, 3, train, mask, self.stride, dtype=dt, act=nn.relu)
        y = conv_bn(y, out, 1, train, mask, dtype=dt)
        return nn.relu(_shortcut(x, out, self.stride, train, mask, dt) + y)


class ResNet(nn.Module):
    """kuangliu's CIFAR ResNet: stem conv3x3 64, four stages (64, 128, 256, 512 planes,
    strides 1, 2, 2, 2), average pool, Linear."""

    stage_sizes: Sequence[int]
    block: type = BasicBlock
    num_classes: int = 100
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        dt = self.dtype
        x = x.astype(dt)
        x = conv_bn(x, scaled(64, self.width), 3, train, mask, dtype=dt, act=nn.relu, name="stem")
        for stage, (blocks, planes) in enumerate(zip(self.stage_sizes, (64, 128, 256, 512))):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                x = self.block(scaled(planes, self.width), stride, dt, name=f"layer{stage + 1}_{i}")(x, train, mask)
        x = jnp.mean(x, axis=(1, 2))
        return classifier(x, self.num_classes, dt)


def ResNet18(**kwargs):
    return ResNet(stage_sizes=(2, 2, 2, 2), block=BasicBlock, **kwargs)


def ResNet50(**kwargs):
    return ResNet(stage_sizes=(3, 4, 6, 3), block=Bottleneck, **kwargs)


def ResNet152(**kwargs):
    return ResNet(stage_sizes=(3, 8, 36, 3), block=Bottleneck, **kwargs)


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """kuangliu's CIFAR VGG16: 13 conv3x3 (bias) + BatchNorm + ReLU, five max-pools down to
    1x1, one Linear(512, classes) (no 4096-wide ImageNet classifier)."""

    num_classes: int = 100
    width: float = 1.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, mask: Optional[jax.Array] = None):
        dt = self.dtype
        x = x.astype(dt)
        for layer in VGG16_LAYERS:
            if layer == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            else:
                x = nn.relu(BatchNorm()(conv(x, scaled(layer, self.width), 3, bias=True, dtype=dt), train, mask))
        x = x.reshape((x.shape[0], -1))
        return classifier(x, self.num_classes, dt)
