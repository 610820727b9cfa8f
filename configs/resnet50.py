"""ResNet50 (kuangliu/pytorch-cifar's CIFAR ResNet50): 23.7 M parameters, 94.8 MB at 100 classes,
just under the default max_param_mb of 100.

Otherwise the seed recipe, untuned for this model (why: configs/default.py).
"""
import pathlib
import runpy

# Loaded by path so the file works wherever it is run from, like configs/smoke.py.
_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = _default["get_config"]()
    config.model = "resnet50"
    return config
