"""MGCE paper (Bondugula et al., AISTATS 2026), Section 5.3 and Appendix G.2: WebVision 1.0 in the "mini" setting
(Jiang et al. 2018): the first 50 classes of the Google subset (about 66k images, real label noise), tested on
WebVision's clean validation set of those classes (2,500 images) and, as in the papers it follows (Ma et al. 2020),
on the same 50 classes of the ILSVRC2012 validation set (2,500 images, ``dataset.extra_test``, reported beside the
first as ``extra_test`` in results.json). Images are streamed from the release folder
(gence_jax.data.stream); runs and expected GPU time: experiments/PROTOCOLS.md.

From the paper: ResNet-50, 224x224, SGD 250 epochs, lr 0.4 multiplied by 0.97 after every epoch, momentum 0.9,
batch 512, L1 weight 1e-5, random width/height shift, colour jitter and horizontal flip.
Left open by the paper, our choices (gence_jax.train.protocols.mgce_webvision_protocol):
* ResNet-50 from scratch, torchvision's layout (v1.5, ImageNet stem), as Ma et al. 2020 train it; no weight decay.
* The decay is a staircase (the rate changes once an epoch, torch's ExponentialLR stepped per epoch): after 250
  epochs lr = 0.4 x 0.97^249 = 2.0e-4.
* The L1 term belongs to MGCE (lambda = 1e-5, MRCpy's default), as in Tables 1 and 3; the baselines train without
  it (``--set loss.l1=1e-5`` gives it to every loss). No gradient clipping (Table 1's 5.0 is not restated).
* Shift: up to 10% of the width and height, borders filled with the nearest pixel, after resizing the image to
  224x224 (Keras' ``width_shift_range=0.1``); jitter: brightness, contrast and saturation 0.4 (torchvision's
  ``ColorJitter(0.4, 0.4, 0.4)``); evaluation: shorter side 256, centre 224 crop; ImageNet mean/std.
* 10% of the (noisy) training list held out, stratified, for model selection and for MGCE's beta (validation every
  10 epochs); the test splits stay clean. 3 seeds (the paper does not say how many).
* Data layout (gence_jax.data.releases): ``<root>/info/train_filelist_google.txt``, ``<root>/info/val_filelist.txt``,
  ``<root>/val_images_256/``; ILSVRC2012 val of classes 0-49 as one folder per class index (``<folder>/<k>/``).
  The paths below are placeholders relative to the repository root: set yours with
  ``--set dataset.name=webvision_mini:/data/webvision --set dataset.extra_test=imagenet_val:/data/imagenet_val50``.

    gence-jax compare --config experiments/configs/mgce_webvision_mini.py --workdir runs/mgce_webvision_mini \
        --losses mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 mgce:beta=8 mgce:beta=11 \
            generalized_ce:q=0.7 cross_entropy mae \
        --regimes clean --seeds 0 1 2 --select mgce --columns accuracy sce nll ece

33 runs (11 loss specs x 3 seeds; ``clean``: no added noise, the labels' own). One run:

    gence-jax train --config experiments/configs/mgce_webvision_mini.py --workdir runs/one \
        --set loss.name=mgce --set loss.hparams.beta=2.0 --set seed=0

"""

from gence_jax.train.protocols import mgce_webvision_protocol


def get_config():
  return mgce_webvision_protocol("data/webvision", imagenet_val="data/imagenet_val50")
