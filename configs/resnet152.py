"""ResNet152 (kuangliu/pytorch-cifar's CIFAR ResNet152): 58.3 M parameters, 233.4 MB at 100 classes.

Over the seed's 100 MB size constraint: with the default max_param_mb this config is
refused before anything runs. Pass --config.max_param_mb=0 (or 250) to train it anyway.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config default:resnet152`.
"""
from cifar_jax.config import load_config_file


def get_config():
    # The seed's 100 MB budget (max_param_mb, from configs/default.py) is kept on purpose.
    return load_config_file("default:resnet152")
