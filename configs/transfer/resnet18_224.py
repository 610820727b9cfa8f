"""resnet18 fine-tuned from torchvision's ImageNet weights (ResNet18_Weights.IMAGENET1K_V1) at 224x224:
the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay 5e-4,
one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std).

The seed's result for this model: none (the seed did not try ResNet18).
What it aims at: about 80 %: DocsaidLab's ImageNet-pretrained ResNet18 reached 79.57 % at 224x224
against 57.92 % at 32x32 (DocsaidLab/cifar100_training_demo, README_en.md; ArcFace head, AdamW).
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:imagenet_resnet18")
    config.pretrained = "ResNet18_Weights.IMAGENET1K_V1"
    return config
