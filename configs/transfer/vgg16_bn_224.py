"""vgg16_bn fine-tuned from torchvision's ImageNet weights (VGG16_BN_Weights.IMAGENET1K_V1) at 224x224:
the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay 5e-4,
one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std), with the changes below.

The seed's result for this model: none (the seed did not try VGG16-BN).
What it aims at: no published figure for this exact setting was checked here; above seed_vgg16's 64.88 %.
grad_accum_steps 2: two passes of 64 images per step of 128, estimated at about 16 GiB
(docs/finetuning.md, Memory).
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:imagenet_vgg16_bn")
    config.pretrained = "VGG16_BN_Weights.IMAGENET1K_V1"
    config.grad_accum_steps = 2
    return config
