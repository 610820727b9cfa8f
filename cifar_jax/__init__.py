"""cifar_jax: the seed report's CIFAR-100 ResNet9 recipe in JAX/Flax.

The pieces for a training loop of your own:

    from cifar_jax import ResNet9, create_train_state, train_step, eval_step
    from cifar_jax import make_optimizer, augment, normalize, load_dataset
"""
from cifar_jax.augment import augment, normalize
from cifar_jax.data import Dataset, load_dataset
from cifar_jax.errors import CifarJaxError, ConfigError, DataError
from cifar_jax.models import ResNet9
from cifar_jax.optim import make_optimizer, one_cycle_schedules
from cifar_jax.steps import StepConfig, TrainState, create_model, create_train_state, eval_step, train_step

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
