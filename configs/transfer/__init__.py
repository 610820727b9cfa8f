"""Fine-tuning configs for ImageNet-pretrained models (`--config transfer/resnet50_224`,
`transfer/resnet50_32`, ...; docs/transfer.md)."""
