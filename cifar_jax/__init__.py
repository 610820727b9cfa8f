"""cifar_jax: the seed report's CIFAR-100 ResNet9 recipe in JAX/Flax.

The pieces for a training loop of your own:

    from cifar_jax import ResNet9, create_train_state, train_step, eval_step
    from cifar_jax import make_optimizer, augment, normalize, load_dataset

The names below are imported on first use (PEP 562), so that `python -m cifar_jax.download`
and every command's `--help` start without importing JAX.
"""
import importlib

_EXPORTS = {
    "augment": "cifar_jax.augment",
    "normalize": "cifar_jax.augment",
    "Dataset": "cifar_jax.data",
    "load_dataset": "cifar_jax.data",
    "CifarJaxError": "cifar_jax.errors",
    "ConfigError": "cifar_jax.errors",
    "DataError": "cifar_jax.errors",
    "ResNet9": "cifar_jax.models",
    "make_optimizer": "cifar_jax.optim",
    "one_cycle_schedules": "cifar_jax.optim",
    "StepConfig": "cifar_jax.steps",
    "TrainState": "cifar_jax.steps",
    "create_model": "cifar_jax.steps",
    "create_train_state": "cifar_jax.steps",
    "eval_step": "cifar_jax.steps",
    "train_step": "cifar_jax.steps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cifar_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
