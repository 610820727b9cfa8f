"""ResNet18 (kuangliu/pytorch-cifar's CIFAR ResNet18): 11.2 M parameters, 44.9 MB at 100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py).
"""
import pathlib
import runpy

# Loaded by path so the file works wherever it is run from, like configs/smoke.py.
_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = _default["get_config"]()
    config.model = "resnet18"
    return config
