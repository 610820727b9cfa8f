"""VGG16 with BatchNorm (kuangliu/pytorch-cifar's CIFAR VGG('VGG16')): 14.8 M parameters,
59.1 MB at 100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py).
"""
import pathlib
import runpy

# Loaded by path so the file works wherever it is run from, like configs/smoke.py.
_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = _default["get_config"]()
    config.model = "vgg16"
    return config
