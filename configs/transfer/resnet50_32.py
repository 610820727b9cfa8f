"""resnet50 fine-tuned from torchvision's ImageNet weights (ResNet50_Weights.IMAGENET1K_V2) at native 32x32,
with the CIFAR stem: the zoo's `resnet50` (kuangliu's CIFAR ResNet50: a 3x3/1 stem conv, no max-pool),
whose layers but the stem conv and the head take the weights (docs/transfer.md, "The CIFAR stem").
Otherwise the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay
5e-4, one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std).

The seed's result with the ImageNet stem at 32x32: 62.73 % (seed_resnet50.py); at 224 the aim is
about 81 % (resnet50_224.py). This recipe tests whether the CIFAR stem recovers part of that gap at
the 32x32 cost (about 49x fewer FLOPs per image than at 224); resnet18_32.py says why.
Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:resnet50")
    config.image_size = 32
    config.pretrained = "ResNet50_Weights.IMAGENET1K_V2"
    return config
