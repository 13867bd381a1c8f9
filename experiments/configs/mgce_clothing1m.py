"""MGCE paper (Bondugula et al., AISTATS 2026), Section 5.3 and Appendix G.3: Clothing-1M (Xiao et al. 2015), 1M
training images with noisy labels in 14 classes, the clean validation list (14,313 keys) for model selection and the
clean test list (10,526 keys) for the results. Images are streamed from the release folder (gence_jax.data.stream);
runs and expected GPU time: experiments/PROTOCOLS.md.

From the paper (following Park et al. 2023): ResNet-50 starting from ImageNet-pretrained weights, SGD 10 epochs, lr
0.002 divided by 10 at the halfway point, momentum 0.9, batch 512, L1 weight 1e-5.
Left open by the paper, our choices (gence_jax.train.protocols.mgce_clothing1m_protocol):
* The ImageNet weights: torchvision's ``ResNet50_Weights.IMAGENET1K_V1`` (``resnet50-0676ba61.pth`` from
  https://download.pytorch.org/models/; download it yourself, the package never downloads), the classifier head
  re-initialised for 14 classes, BatchNorm statistics kept and updated (gence_jax.models.pretrained). Reading a
  ``.pth`` needs torch; convert it once to ``.safetensors`` or ``.npz`` to load it without.
* Every epoch is one pass over the full noisy list (1,000,000 keys; DivideMix instead samples 1,000 batches an
  epoch); the lr drops after epoch 5 of 10; no weight decay, no gradient clipping.
* Augmentation: shorter side 256, random 224 crop, horizontal flip (DivideMix's loader; the appendix names none);
  evaluation: centre 224 crop; ImageNet mean/std.
* The L1 term belongs to MGCE (lambda = 1e-5), as in Tables 1 and 3; the baselines train without it. Validation
  (the clean list: beta and the checkpoint are selected on it) after every epoch. 3 seeds.
* Data layout (gence_jax.data.releases): the release's key lists at ``<root>`` or ``<root>/annotations``, images
  under ``<root>/images/``. The paths below are placeholders relative to the repository root: set yours with
  ``--set dataset.name=clothing1m:/data/clothing1m --set model.pretrained=/weights/resnet50-0676ba61.pth``.

    gence-jax compare --config experiments/configs/mgce_clothing1m.py --workdir runs/mgce_clothing1m \
        --losses mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 mgce:beta=8 mgce:beta=11 \
            generalized_ce:q=0.7 cross_entropy mae \
        --regimes clean --seeds 0 1 2 --select mgce --columns accuracy sce nll ece

33 runs (11 loss specs x 3 seeds; ``clean``: the release's own noisy labels). One run:

    gence-jax train --config experiments/configs/mgce_clothing1m.py --workdir runs/one \
        --set loss.name=mgce --set loss.hparams.beta=2.0 --set seed=0

"""

from gence_jax.train.protocols import mgce_clothing1m_protocol


def get_config():
  return mgce_clothing1m_protocol("data/clothing1m", pretrained="weights/resnet50-0676ba61.pth")
