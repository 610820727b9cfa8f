"""The fine-tuning recipe the configs/transfer/*_224.py files share: an ImageNet-pretrained
torchvision model on CIFAR-100 at 224x224. The *_32.py files use it at 32x32 with the CIFAR stem
(the zoo's model of the same architecture, e.g. `transfer/finetune:resnet50`).

    --config transfer/finetune:imagenet_resnet50   (the part after ':' is the model)

What it changes from the seed recipe (configs/default.py), and why:
- image_size 224: each 32x32 image is cropped and flipped at 32, then upsampled (bilinear) on
  the device to the resolution the ImageNet weights were trained at. At 32x32 an ImageNet stem
  (stride-2 conv + max-pool) leaves a 1x1 map at the last stage; DocsaidLab's ResNet50 went from
  61.76 % at 32x32 to 81.21 % at 224 (cifar100_training_demo, README_en.md).
- ImageNet mean and std, the statistics the weights expect.
- SGD (configs/sgd.py: momentum 0.9, weight decay 5e-4, torch SGD's coupled, no gradient
  clipping, a cosine to 0, batch 128), with nesterov momentum, one warmup epoch, 10 epochs
  and lr 0.01: the usual fine-tuning recipe (a fraction of from-scratch epochs, an lr ten
  times below from-scratch SGD's 0.1).
- max_param_mb 0: the 100 MB budget is the seed's constraint for its own model, and VGG16
  (537 MB) and ResNet152 (233 MB) exceed it.
Nothing here is measured by us yet: no weights or GPU were available when it was written.
"""
from cifar_jax.config import load_config_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config(model: str = "imagenet_resnet50"):
    config = load_config_file(f"sgd:{model}")
    config.image_size = 224
    config.mean = IMAGENET_MEAN
    config.std = IMAGENET_STD
    config.max_param_mb = 0.0
    config.learning_rate = 0.01
    config.nesterov = True
    config.warmup_epochs = 1.0
    config.num_epochs = 10
    config.eval_batch_size = 250
    return config
