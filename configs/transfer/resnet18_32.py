"""resnet18 fine-tuned from torchvision's ImageNet weights (ResNet18_Weights.IMAGENET1K_V1) at native 32x32,
with the CIFAR stem: the zoo's `resnet18` (kuangliu's CIFAR ResNet18: a 3x3/1 stem conv, no max-pool),
whose layers but the stem conv and the head take the weights (docs/transfer.md, "The CIFAR stem").
Otherwise the shared recipe of configs/transfer/finetune.py (SGD nesterov, lr 0.01, weight decay
5e-4, one warmup epoch into a cosine, 10 epochs, batch 128, ImageNet mean/std).

Why: the seed's 32x32 transfer runs kept the ImageNet stems, which shrink a CIFAR image to 8x8
before the first block; the 224 recipe (resnet18_224.py) avoids that by resizing, at about 49x the
FLOPs per image. This one keeps 32x32 and changes the stem instead: the pretrained body sees 32x32
maps at layer1, as kuangliu's ResNet18 does. The fresh stem conv (PyTorch's init) and head (zeros)
are what the warmup epoch is for.
What it aims at: between the 32x32 ImageNet-stem runs (DocsaidLab's ResNet18: 57.92 %) and the 224
ones (79.57 %; DocsaidLab/cifar100_training_demo, README_en.md), at the 32x32 cost; no published
figure for this setting was checked. Not measured by us yet (no weights or GPU where it was written).
"""
from cifar_jax.config import load_config_file


def get_config():
    config = load_config_file("transfer/finetune:resnet18")
    config.image_size = 32
    config.pretrained = "ResNet18_Weights.IMAGENET1K_V1"
    return config
