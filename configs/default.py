"""The seed recipe: ResNet9 on CIFAR-100, 30 epochs, Adam + L2, one-cycle, value clip.

Every hyperparameter lives here; override any of them on the command line with
`--config.KEY=VALUE`, e.g. `--config.num_epochs=10`.

Another model on the same recipe: `--config default:resnet18` (the part after ':' is passed
to `get_config`, as in ml_collections' config_flags; the named configs resnet18, ...,
efficientnet_b0 are the same under their own names). Only `model` changes: the
optimizer, schedule, epochs, batch size and augmentation stay this recipe, so the models
compare on one pipeline. It is not tuned for them: their usual CIFAR recipe
(kuangliu/pytorch-cifar: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine over 200
epochs) is the named config sgd (configs/sgd.py).
"""
import ml_collections


def get_config(model: str = "") -> ml_collections.ConfigDict:
    """The seed recipe; with `model` (e.g. "resnet18"), that model on the same recipe."""
    config = ml_collections.ConfigDict()

    # Data (docs/data.md).
    # cifar100 | cifar10 (the official python archives in data_dir, downloaded there if missing),
    # image_folder (data_dir is a folder or .tar/.tar.gz/.zip of train/<class>/<image>),
    # synthetic (offline, learnable), tfds:NAME (any prepared TFDS image classification set).
    config.dataset = "cifar100"
    # "" means $CIFAR_JAX_DATA, else ~/.cache/cifar_jax/datasets (cifar100/cifar10), or
    # TFDS's own default (tfds:NAME); image_folder needs a path here.
    config.data_dir = ""
    config.num_classes = 100
    config.verify_md5 = True  # check the official archive checksums
    # Fetch a missing cifar100/cifar10 archive (tfds:NAME: let TFDS download and prepare it).
    config.download = True
    # A mirror of the archive (or a folder URL ending in "/"); "" means $CIFAR_JAX_DATA_URL,
    # else the official https://www.cs.toronto.edu/~kriz/ URL. The md5 is checked either way.
    config.data_url = ""
    config.download_timeout = 60.0  # seconds to connect, and the longest a read may stall
    config.cache_dir = ""  # decoded image_folder arrays; "" means ~/.cache/cifar_jax
    config.synthetic_train_size = 2048
    config.synthetic_test_size = 512
    config.augment = True  # random crop (reflect pad crop_padding) + horizontal flip in training
    config.crop_padding = 4  # the crop's reflect padding: a random translation by up to this many pixels
    # airbench's flip: each image flipped at random in epoch 0, then exactly the images not flipped
    # the epoch before (instead of a fresh coin per image and epoch).
    config.alternating_flip = False
    # Normalisation applied on the device (the seed's CIFAR-100 statistics).
    config.mean = (0.5071, 0.4867, 0.4408)
    config.std = (0.2675, 0.2565, 0.2761)

    # Model.
    # resnet9 (the seed's) | resnet18 | resnet50 | resnet152 | vgg16 | mobilenet_v2 |
    # efficientnet_b0: `cifar-jax models --list` prints their sizes.
    # imagenet_<name> (resnet18, resnet50, resnet152, vgg16, vgg16_bn, mobilenet_v2,
    # efficientnet_b0): torchvision's ImageNet architectures, for `pretrained` below.
    config.model = model or "resnet9"
    # Refuse a model with more float32 parameter MB than this (the seed's 100 MB size
    # constraint); 0 disables the check.
    config.max_param_mb = 100.0
    config.width = 1.0  # channel multiplier: 1.0 is the seed's ResNet9 (32..512), 2.0 the original
    config.dtype = "float32"  # compute dtype: float32 or bfloat16 (params and BN stats stay float32)
    # Start from pretrained weights (the imagenet_* models; docs/transfer.md): a torchvision
    # .pth state_dict path, or a torchvision weight name such as "ResNet50_Weights.IMAGENET1K_V2"
    # (looked up in $TORCH_HOME/hub/checkpoints, else downloaded); the head is replaced for
    # num_classes. "" trains from the random init.
    config.pretrained = ""
    # The model's input size: crop and flip at 32x32, normalise, then resize (bilinear) to
    # image_size x image_size on the device, in training and evaluation (224 for ImageNet
    # models); 32 means no resize (the seed's setting).
    config.image_size = 32

    # Training.
    config.num_epochs = 30
    config.batch_size = 256
    config.eval_batch_size = 500
    # Test-time augmentation in evaluation: 0 none, 1 the mean logits of the image and its mirror,
    # 2 those and two translated views (airbench's; `cifar-jax evaluate --tta LEVEL` for a saved run).
    config.tta_level = 0
    # Run each batch as this many microbatches of batch_size / grad_accum_steps (one forward
    # and backward pass each, BatchNorm statistics per microbatch) and apply one update with
    # the whole batch's gradient: the same effective batch in less activation memory.
    config.grad_accum_steps = 1
    config.seed = 0
    # Checkpoints (WORKDIR/checkpoints, Orbax): save after every N-th epoch and the last;
    # keep the newest keep_checkpoints plus the best by test accuracy.
    config.checkpoint_every_epochs = 1
    config.keep_checkpoints = 3
    # NaN/inf loss or gradients: False stops the run at once (nothing bad is saved);
    # True skips such steps (no update) and counts them in the epoch line.
    config.skip_nonfinite_steps = False
    config.progress_updates = 8  # about this many compiled calls (progress-bar steps) per epoch
    config.xla_cache_dir = "~/.cache/cifar_jax/xla"  # persistent compilation cache; "" = off

    # Optimizer: element-wise clip -> weight decay -> Adam -> one-cycle lr (PyTorch OneCycleLR).
    config.learning_rate = 1e-3  # one-cycle peak (OneCycleLR max_lr)
    config.weight_decay = 1e-3
    config.weight_decay_mode = "l2"  # l2: torch Adam(weight_decay); adamw: decoupled
    config.grad_clip = 0.01  # clip each gradient element to [-grad_clip, grad_clip]; 0 disables
    config.pct_start = 0.3
    config.div_factor = 25.0
    config.final_div_factor = 1e4
    config.beta1_max = 0.95  # OneCycleLR cycle_momentum: beta1 0.95 -> 0.85 -> 0.95
    config.beta1_min = 0.85
    config.beta2 = 0.999
    config.adam_eps = 1e-8
    # Optimizer and schedule choices (docs/finetuning.md); the defaults are the seed recipe's.
    # adam (torch Adam) | sgd (torch SGD with momentum, nesterov, weight_decay) | muon (optax's Muon for
    # the conv kernels, sgd for the rest)
    config.optimizer = "adam"
    config.momentum = 0.9  # SGD momentum (Adam's beta1) for cosine/step; onecycle cycles beta1_max -> beta1_min instead
    config.nesterov = True  # sgd only: Nesterov momentum, as torch.optim.SGD(nesterov=True)
    # onecycle (OneCycleLR, peak learning_rate) | cosine (warmup, cosine to 0) | step (MultiStepLR) |
    # triangle (airbench's: linear from warmup_start_factor up to 1 at pct_start, down to final_lr_factor)
    config.schedule = "onecycle"
    config.warmup_epochs = 0.0  # cosine/step: linear warmup over this many epochs (fractions allowed)
    # cosine/step/triangle: the warmup starts at learning_rate times this (torch LinearLR start_factor)
    config.warmup_start_factor = 0.01
    config.lr_decay_epochs = (10, 20)  # step: multiply the lr by lr_decay_factor at each of these epochs
    config.lr_decay_factor = 0.1  # step: the factor (torch MultiStepLR gamma)
    config.backbone_lr_mult = 1.0  # learning rate of every parameter outside the model's head, times the head's
    # Learning rate of the norm layers' biases times this, their weight decay divided by it (airbench's 64).
    config.bn_bias_lr_mult = 1.0
    # Parameters that get no update: comma-separated patterns of their paths (fnmatch), e.g.
    # "whiten/kernel,*/BatchNorm_*/scale" (airbench's frozen whitening filters and norm scales).
    config.frozen_params = ""
    # airbench94's whitening conv bias trains for this many epochs, then stays (0: no limit).
    config.whiten_bias_epochs = 0
    config.final_lr_factor = 0.07  # triangle: the lr falls to learning_rate times this at the last step
    # Lookahead (airbench's EMA of the weights): every this many steps the slow weights move towards
    # the trained ones by 1 - lookahead_decay**every * (step / steps)**3 and replace them; the last step
    # takes the slow weights. 0 turns it off.
    config.lookahead_every = 0
    config.lookahead_decay = 0.95  # lookahead: the per-step decay of the slow weights' schedule
    config.label_smoothing = 0.0  # training loss against (1 - a) one-hot + a / classes targets
    config.muon_lr = 0.24  # muon: the conv kernels' lr at the schedule's peak
    config.muon_momentum = 0.6  # muon: the conv kernels' (Nesterov) momentum
    # Train the head alone (feature extraction): the backbone gets no updates and no optimizer
    # state, and the model runs in inference mode (BatchNorm running statistics, left as they
    # are; no dropout) in training too.
    config.freeze_backbone = False

    return config
