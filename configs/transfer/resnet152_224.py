"""resnet152 fine-tuned from torchvision's ImageNet weights (ResNet152_Weights.IMAGENET1K_V2) at 224x224:
the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay 5e-4,
one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std), with the changes below.

The seed's result for this model: 55.42 % (seed_resnet152.py).
What it aims at: no published figure for this exact setting was checked here; a deeper ResNet with better
ImageNet accuracy should at least match ResNet50's figure (about 81 %, DocsaidLab at 224).
grad_accum_steps 2: two passes of 64 images per step of 128, estimated at about 23 GiB
(docs/finetuning.md, Memory); raise it to 4 on a smaller GPU.
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:imagenet_resnet152")
    config.pretrained = "ResNet152_Weights.IMAGENET1K_V2"
    config.grad_accum_steps = 2
    return config
