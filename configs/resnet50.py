"""ResNet50 (kuangliu/pytorch-cifar's CIFAR ResNet50): 23.7 M parameters, 94.8 MB at 100 classes,
just under the default max_param_mb of 100.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:resnet50`.
"""
from cifar_jax.config import load_config_file


def get_config():
    return load_config_file("default:resnet50")
