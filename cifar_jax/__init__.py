"""cifar_jax: the seed report's CIFAR-100 ResNet9 recipe in JAX/Flax.

The pieces for a training loop of your own:

    from cifar_jax import ResNet9, create_train_state, train_step, eval_step
    from cifar_jax import make_optimizer, augment, normalize, load_dataset
"""
import importlib
import sys
import types

# Imported on first use (PEP 562), so that `cifar-jax download` and `cifar-jax report`,
# which need none of these, start without importing JAX.
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


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cifar_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """The submodule cifar_jax.augment shares its name with the function it exports;
    importing the submodule sets this package's attribute, which stays the function
    (as it was when this file imported everything eagerly)."""

    def __setattr__(self, name, value):
        if name == "augment" and isinstance(value, types.ModuleType) and hasattr(value, "augment"):
            value = value.augment
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "CifarJaxError",
    "ConfigError",
    "DataError",
    "Dataset",
    "ResNet9",
    "StepConfig",
    "TrainState",
    "augment",
    "create_model",
    "create_train_state",
    "eval_step",
    "load_dataset",
    "make_optimizer",
    "normalize",
    "one_cycle_schedules",
    "train_step",
]
