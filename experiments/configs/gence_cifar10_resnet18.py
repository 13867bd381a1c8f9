"""GenCE paper (Zhan, Zhou & Shen 2026, arXiv:2604.06689), CIFAR-10: cross-entropy vs Generative CE vs FLSD-53 vs
AdaFocal vs Dual Focal, on balanced data, small data and long-tailed data (exponential profile, imbalance ratio 100),
with 20-bin ECE and classwise ECE before and after temperature scaling (TS) and ATS (both fitted on the validation
split), and OOD detection CIFAR-10 vs SVHN (``ood.datasets = "svhn_cropped"``, the TFDS ``test`` split, 26,032 images;
AUROC / AUPR / FPR95 from max-probability, entropy and energy scores). 10 seeds, as in the paper. Model: ResNet-18
(CIFAR stem) for every dataset (our choice; the paper's architectures may differ). Needs the TFDS ``cifar10`` and
``svhn_cropped`` data and a GPU; runs and expected time: experiments/PROTOCOLS.md.

    gence-jax compare --config experiments/configs/gence_cifar10_resnet18.py --workdir runs/gence/cifar10 \
        --losses cross_entropy gence flsd53 adafocal dual_focal:gamma=2.0 \
        --regimes clean small:500 longtail:exp:100 --seeds 0 1 2 3 4 5 6 7 8 9 \
        --columns accuracy nll ece classwise_ece ece:ts classwise_ece:ts ece:ats classwise_ece:ats

150 runs (5 losses x 3 regimes x 10 seeds). small:500 keeps 500 training images per class (10% of the official
training set; validation keeps the same proportion); longtail:exp:100 keeps n_c = floor(n_max 100^(-c/(K-1))) images
of class c (Cao et al. 2019), n_max = the smallest class count of the training split (4,500 here). Test sets stay
balanced and clean.
Training recipe (the one the focal-loss baselines were published with): gence_jax.train.protocols.gence_protocol.
Dual Focal's gamma is a hyper-parameter its authors tune per dataset; add values (``dual_focal:gamma=5.0``) to compare them.
"""

from gence_jax.train.protocols import gence_protocol


def get_config():
  return gence_protocol("cifar10")
