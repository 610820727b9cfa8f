"""MobileNetV2 (kuangliu/pytorch-cifar's CIFAR MobileNetV2): 2.4 M parameters, 9.6 MB at
100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:mobilenet_v2`.
"""
from cifar_jax.config import load_config_file


def get_config():
    return load_config_file("default:mobilenet_v2")
