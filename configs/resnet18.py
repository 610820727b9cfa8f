"""ResNet18 (kuangliu/pytorch-cifar's CIFAR ResNet18): 11.2 M parameters, 44.9 MB at 100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:resnet18`.
"""
from cifar_jax.config import load_config_file


def get_config():
    return load_config_file("default:resnet18")
