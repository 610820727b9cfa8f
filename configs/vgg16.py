"""VGG16 with BatchNorm (kuangliu/pytorch-cifar's CIFAR VGG('VGG16')): 14.8 M parameters,
59.1 MB at 100 classes.

Optimizer, schedule, epochs, batch size and augmentation: kept the seed recipe of
configs/default.py (Adam + L2 1e-3, one-cycle to 1e-3, clip 0.01, 30 epochs, batch 256),
not tuned for this model. The usual CIFAR recipe for it (kuangliu/pytorch-cifar: SGD,
lr 0.1, momentum 0.9, weight decay 5e-4, cosine over 200 epochs) needs an SGD option
that cifar_jax.optim does not have.
"""
import pathlib
import runpy

# Loaded by path so the file works wherever it is run from, like configs/smoke.py.
_default = runpy.run_path(str(pathlib.Path(__file__).with_name("default.py")))


def get_config():
    config = _default["get_config"]()
    config.model = "vgg16"
    return config
