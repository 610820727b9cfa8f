"""VGG16 with BatchNorm (kuangliu/pytorch-cifar's CIFAR VGG('VGG16')): 14.8 M parameters,
59.1 MB at 100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:vgg16`.
"""
from cifar_jax.config import load_config_file


def get_config():
    return load_config_file("default:vgg16")
