"""The seed recipe: ResNet9 on CIFAR-100, 30 epochs, Adam + L2, one-cycle, value clip.

Every hyperparameter lives here; override any of them on the command line with
`--config.KEY=VALUE`, e.g. `--config.num_epochs=10`.

Another model on the same recipe: `--config configs/default.py:resnet18` (the part after
':' is passed to `get_config`, as in ml_collections' config_flags; configs/resnet18.py, ...,
efficientnet_b0.py are the same under their own names). Only `model` changes: the
optimizer, schedule, epochs, batch size and augmentation stay this recipe, so the models
compare on one pipeline. It is not tuned for them: their usual CIFAR recipe
(kuangliu/pytorch-cifar: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine over 200
epochs) needs an SGD option that cifar_jax.optim does not have.
"""
import ml_collections


def get_config(model: str = "") -> ml_collections.ConfigDict:
    """The seed recipe; with `model` (e.g. "resnet18"), that model on the same recipe."""
    config = ml_collections.ConfigDict()

    # Data.
    # cifar100 | cifar10 (official python archives in data_dir, else TFDS),
    # image_folder (data_dir is a folder or .tar/.tar.gz/.zip of train/<class>/<image>),
    # synthetic (offline, learnable), tfds:NAME (any TFDS image classification set).
    config.dataset = "cifar100"
    config.data_dir = "data"
    config.num_classes = 100
    config.verify_md5 = True  # check the official archive checksums
    config.download = True  # let TFDS download cifar100/cifar10 when data_dir has no archive
    config.cache_dir = ""  # decoded image_folder arrays; "" means ~/.cache/cifar_jax
    config.synthetic_train_size = 2048
    config.synthetic_test_size = 512
    config.augment = True  # random crop (reflect pad 4) + horizontal flip in training
    # Normalisation applied on the device (the seed's CIFAR-100 statistics).
    config.mean = (0.5071, 0.4867, 0.4408)
    config.std = (0.2675, 0.2565, 0.2761)

    # Model.
    # resnet9 (the seed's) | resnet18 | resnet50 | resnet152 | vgg16 | mobilenet_v2 |
    # efficientnet_b0: `python -m cifar_jax.zoo --list` prints their sizes.
    config.model = model or "resnet9"
    # Refuse a model with more float32 parameter MB than this (the seed's 100 MB size
    # constraint); 0 disables the check.
    config.max_param_mb = 100.0
    config.width = 1.0  # channel multiplier: 1.0 is the seed's ResNet9 (32..512), 2.0 the original
    config.dtype = "float32"  # compute dtype: float32 or bfloat16 (params and BN stats stay float32)

    # Training.
    config.num_epochs = 30
    config.batch_size = 256
    config.eval_batch_size = 500
    config.seed = 0
    # Checkpoints (WORKDIR/checkpoints, Orbax): save after every N-th epoch and the last;
    # keep the newest keep_checkpoints plus the best by test accuracy.
    config.checkpoint_every_epochs = 1
    config.keep_checkpoints = 3
    # NaN/inf loss or gradients: False stops the run at once (nothing bad is saved);
    # True skips such steps (no update) and counts them in the epoch line.
    config.skip_nonfinite_steps = False
    config.progress_updates = 8  # about this many compiled calls (progress-bar steps) per epoch
    config.xla_cache_dir = "~/.cache/cifar_jax/xla"  # persistent compilation cache; "" = off

    # Optimizer: element-wise clip -> weight decay -> Adam -> one-cycle lr (PyTorch OneCycleLR).
    config.learning_rate = 1e-3  # one-cycle peak (OneCycleLR max_lr)
    config.weight_decay = 1e-3
    config.weight_decay_mode = "l2"  # l2: torch Adam(weight_decay); adamw: decoupled
    config.grad_clip = 0.01  # clip each gradient element to [-grad_clip, grad_clip]; 0 disables
    config.pct_start = 0.3
    config.div_factor = 25.0
    config.final_div_factor = 1e4
    config.beta1_max = 0.95  # OneCycleLR cycle_momentum: beta1 0.95 -> 0.85 -> 0.95
    config.beta1_min = 0.85
    config.beta2 = 0.999
    config.adam_eps = 1e-8

    return config
