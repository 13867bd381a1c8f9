"""GenCE paper (Zhan, Zhou & Shen 2026, arXiv:2604.06689), the medical imaging comparison: the paper's own
benchmark is not public, so this runs the comparison on the public standard, MedMNIST v2 (Yang et al. 2023,
Scientific Data), here PathMNIST (colon pathology, 9 classes, 28x28 RGB, 89,996 / 10,004 / 7,180 train / val / test
images): cross-entropy vs Generative CE vs FLSD-53 vs AdaFocal vs Dual Focal, 20-bin ECE and classwise ECE before and
after TS and ATS fitted on the set's own validation split. Runs and expected time: experiments/PROTOCOLS.md.

Training recipe: gence_jax.train.protocols.gence_protocol (the one the focal-loss baselines were published with:
SGD momentum 0.9, weight decay 5e-4, batch 128, lr 0.1 divided by 10 at epochs 150 and 250, 350 epochs, crop +
flip), ResNet-18 with the CIFAR stem. Our choices where neither paper applies:
* PathMNIST (the largest multi-class 2-D set); any single-label 2-D set loads the same way
  (``--set dataset.name=medmnist:dermamnist:<file.npz>``; ChestMNIST, multi-label, is refused).
* The validation split is MedMNIST's own (not held out of train); the balanced regime only (``clean``).
* No OOD detection: the CIFAR configs' OOD set (SVHN, 32x32) does not match 28x28 inputs (``ood.datasets`` empty).
* The ``.npz`` is MedMNIST's release file at 28x28 (``pathmnist.npz``, from the project's page medmnist.com or the
  ``medmnist`` package's download; the package never downloads it); the path below is a placeholder relative to the
  repository root: ``--set dataset.name=medmnist:pathmnist:/data/medmnist/pathmnist.npz``.

    gence-jax compare --config experiments/configs/gence_medmnist.py --workdir runs/gence/pathmnist \
        --losses cross_entropy gence flsd53 adafocal dual_focal:gamma=2.0 \
        --regimes clean --seeds 0 1 2 3 4 5 6 7 8 9 \
        --columns accuracy nll ece classwise_ece ece:ts classwise_ece:ts ece:ats classwise_ece:ats

50 runs (5 losses x 10 seeds).
"""

from gence_jax.train.protocols import gence_protocol


def get_config():
  return gence_protocol("medmnist:pathmnist:data/medmnist/pathmnist.npz", "resnet18", ood="")
