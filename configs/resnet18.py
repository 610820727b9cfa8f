"""ResNet18 (kuangliu/pytorch-cifar's CIFAR ResNet18): 11.2 M parameters, 44.9 MB at 100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py): the same as
`--config configs/default.py:resnet18`.
"""
import pathlib

from cifar_jax.config import load_config_file


def get_config():
    return load_config_file(f"{pathlib.Path(__file__).with_name('default.py')}:resnet18")
