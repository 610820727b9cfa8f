"""A tiny offline run on synthetic data: a few seconds on a laptop CPU."""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("default")
    config.dataset = "synthetic"
    config.num_classes = 10
    config.synthetic_train_size = 512
    config.synthetic_test_size = 256
    config.width = 0.25
    config.num_epochs = 3
    config.batch_size = 64
    config.eval_batch_size = 128
    # A short schedule needs a higher peak to learn anything in 24 steps.
    config.learning_rate = 1e-2
    return config
