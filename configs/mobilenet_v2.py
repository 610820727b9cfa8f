"""MobileNetV2 (kuangliu/pytorch-cifar's CIFAR MobileNetV2): 2.4 M parameters, 9.6 MB at
100 classes.

Otherwise the seed recipe, untuned for this model (why: configs/default.py).
"""
import pathlib
import runpy

# Loaded by path so the file works wherever it is run from, like configs/smoke.py.
_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = _default["get_config"]()
    config.model = "mobilenet_v2"
    return config
