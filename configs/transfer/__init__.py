"""Fine-tuning configs for ImageNet-pretrained models (`--config transfer/resnet50_224`, ...;
docs/transfer.md)."""
