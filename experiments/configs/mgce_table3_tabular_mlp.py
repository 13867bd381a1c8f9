"""MGCE paper, Table 3, tabular data (Bondugula, Mazuelas, Perez & Liu, AISTATS 2026): an MLP with one hidden layer of
1024 units, SGD lr 0.001, on any tabular ``.npz`` file. Defaults to scikit-learn's bundled digits (64 features, no
download) so the config runs anywhere; point it at your data with ``--set dataset.name=path/to/data.npz``.

The ``.npz`` keys the loader expects (``gence_jax.data.load_npz``): float features ``x_train`` [N, D] and integer
labels ``y_train`` [N] in [0, K), plus ``x_test``, ``y_test`` (optionally ``x_val``, ``y_val``: then that
validation split is used as given instead of holding out ``dataset.val_fraction`` of train), or just ``x``, ``y``
(then a stratified 20% test split is held out with a fixed seed, 0). An optional scalar ``num_classes`` overrides
max(label) + 1. Features are standardised per feature with the TRAIN split's mean and std; no augmentation.

    gence-jax compare --config experiments/configs/mgce_table3_tabular_mlp.py --workdir runs/mgce_table3/mydata \
        --set dataset.name=path/to/data.npz \
        --losses mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 mgce:beta=8 mgce:beta=11 \
            generalized_ce:q=0.7 cross_entropy mae \
        --regimes clean symmetric:0.2 symmetric:0.4 --seeds 0 1 2 3 4 --select mgce --columns accuracy sce nll ece

165 runs per dataset (11 loss specs x 3 regimes x 5 seeds), as for Table 1; drop regimes you do not need. Runs on a
CPU or a GPU (the MLP step is small: the run time is dominated by per-step overhead; see experiments/PROTOCOLS.md).
This is the one Table 3 protocol (`gence_jax.train.protocols.mgce_table3_protocol`) that the Adult and MNIST configs
and the write-up in experiments/README.md use, PyTorch's default nn.Linear initialisation included. Assumptions
where the paper is silent: SGD momentum 0.9 and gradient-norm clip 5.0 as in its image protocol, batch 128, 150
epochs, constant learning rate, 10% validation, model selection on validation every 5 epochs.
"""

from gence_jax.train.protocols import mgce_table3_protocol


def get_config():
  return mgce_table3_protocol("digits")  # placeholder: --set dataset.name=path/to/data.npz
