"""mobilenet_v2 fine-tuned from torchvision's ImageNet weights (MobileNet_V2_Weights.IMAGENET1K_V2) at 224x224:
the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay 5e-4,
one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std), with the changes below.

The seed's result for this model: 55.66 % (seed_mobilenet_v2.py).
What it aims at: no published figure for this exact setting was checked here; the aim is the
ResNet50 pattern (far above the 32x32 result at 224). Weight decay 4e-5, torchvision's own
for MobileNetV2 (its depthwise convs have few weights each).
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:imagenet_mobilenet_v2")
    config.pretrained = "MobileNet_V2_Weights.IMAGENET1K_V2"
    config.weight_decay = 4e-05
    return config
