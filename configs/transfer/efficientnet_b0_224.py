"""efficientnet_b0 fine-tuned from torchvision's ImageNet weights (EfficientNet_B0_Weights.IMAGENET1K_V1) at 224x224:
the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay 5e-4,
one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std), with the changes below.

The seed's result for this model: none: its loss stayed near 3 (seed_efficientnet_b0.py).
What it aims at: the EfficientNet authors report 91.7 % on CIFAR-100 by fine-tuning the largest of the
family, B7 (Tan and Le 2019; Google AI blog); no B0 figure was checked here. The aim is the
ResNet50 pattern. Weight decay 4e-5, as for MobileNetV2 (the same depthwise blocks).
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:imagenet_efficientnet_b0")
    config.pretrained = "EfficientNet_B0_Weights.IMAGENET1K_V1"
    config.weight_decay = 4e-05
    return config
