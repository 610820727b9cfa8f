"""resnet50 fine-tuned from torchvision's ImageNet weights (ResNet50_Weights.IMAGENET1K_V2) at 224x224:
the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay 5e-4,
one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std).

The seed's result for this model: 62.73 % (seed_resnet50.py).
What it aims at: about 81 %: DocsaidLab fine-tuned an ImageNet-pretrained ResNet50 on CIFAR-100 to
81.21 % at 224x224 against 61.76 % at 32x32 (DocsaidLab/cifar100_training_demo, README_en.md; timm weights, an ArcFace
margin head, AdamW, 200 epochs, over 80 % within 5 epochs). Above it: BiT-M R50x1, 86.4 %
(google-research/big_transfer README), but pretrained on ImageNet-21k, not these weights.
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:imagenet_resnet50")
    config.pretrained = "ResNet50_Weights.IMAGENET1K_V2"
    return config
