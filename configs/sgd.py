"""The zoo's usual CIFAR recipe (kuangliu/pytorch-cifar's main.py): SGD lr 0.1, momentum 0.9
(no nesterov), weight decay 5e-4 (coupled, torch SGD's), cosine to 0 over 200 epochs, batch 128,
no gradient clipping.

Differences from that script: the cosine is stepped every batch (kuangliu steps
CosineAnnealingLR(T_max=200) once per epoch), and the data, augmentation (reflect padding) and
model stay the default's: pick a model with `--config sgd:resnet18` (kuangliu's ResNet18; the
part after ':' is the model, as for default) or --config.model=resnet18.
configs/transfer/finetune.py starts from this recipe.
"""
from cifar_jax.config import load_config_file


def get_config(model: str = ""):
    config = load_config_file(f"default:{model}" if model else "default")
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 5e-4
    config.weight_decay_mode = "l2"
    config.grad_clip = 0.0
    config.schedule = "cosine"
    config.warmup_epochs = 0.0
    config.num_epochs = 200
    config.batch_size = 128
    return config
