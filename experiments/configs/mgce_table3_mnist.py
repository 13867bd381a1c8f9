"""MGCE paper, Table 3 (Bondugula, Mazuelas, Perez & Liu, AISTATS 2026, Appendix G.4) on MNIST as tabular data
(``../shared/data/mnist_subset.npz``: the official 10,000 test images and the first 17,435 official training images).
The protocol of ``mgce_table3_tabular_mlp.py`` (MLP 1024 on the 784 pixels, SGD lr 0.001, momentum 0.9, batch 128,
150 epochs, clip 5.0, 10% validation, model selection on validation every 5 epochs) with the choices the paper leaves
open written down:

* data: the file's official test split is the test set; 10% of its 17,435 training images (seeded per run) is the
  validation split, so 15,691 images train (the paper's MNIST has 60,000 training images: ours are 29% of them);
* features: the images are grayscale [N, 28, 28] and get one channel, so the loader standardises them with ONE mean
  and std (the training split's over all pixels, the usual torchvision MNIST recipe), not per pixel;
* initialisation: ``model.kwargs.initializer`` = "torch_default" (PyTorch's nn.Linear default), as for Adult.

The grid (the Adult config's, on this file; experiments/README.md):

    gence-jax compare --config experiments/configs/mgce_table3_mnist.py --workdir runs/mgce_table3/mnist --losses \
        cross_entropy generalized_ce:q=0.7 mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 \
        mgce:beta=8 mgce:beta=11 --regimes symmetric:0.4 clean symmetric:0.2 --seeds 0 1 2 --select mgce \
        --reference cross_entropy --columns accuracy sce nll ece
"""

from gence_jax.train.protocols import mgce_table3_protocol


def get_config():
  return mgce_table3_protocol("../shared/data/mnist_subset.npz")
