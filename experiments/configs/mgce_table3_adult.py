"""MGCE paper, Table 3 (Bondugula, Mazuelas, Perez & Liu, AISTATS 2026, Appendix G.4) on UCI Adult
(``../shared/data/adult.npz``: 30,162 rows, 104 features). The protocol of ``mgce_table3_tabular_mlp.py`` (MLP 1024,
SGD lr 0.001, momentum 0.9, batch 128, 150 epochs, clip 5.0, 10% validation, model selection on validation every 5
epochs) with the choices the paper leaves open written down:

* test split: the file has no test split; the loader holds out a stratified 20% with a fixed seed (0), the same for
  every run and seed; 10% of the rest is the validation split (seeded per run);
* features: standardised with the training split's mean and std (the 6 numeric columns and the one-hot columns);
* initialisation: ``model.kwargs.initializer`` = "torch_default" (PyTorch's nn.Linear default, what a PyTorch
  reference implementation trains from); "lecun_normal" (Flax's default) and "he_normal" are the alternatives the
  sensitivity runs compare.

    gence-jax compare --config experiments/configs/mgce_table3_adult.py --workdir runs/mgce_table3/adult \
        --losses mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 mgce:beta=8 \
            mgce:beta=11 generalized_ce:q=0.7 cross_entropy \
        --regimes clean symmetric:0.2 symmetric:0.4 --seeds 0 1 2 --select mgce --reference cross_entropy \
        --columns accuracy sce nll ece
"""

from gence_jax.train.protocols import mgce_table3_protocol


def get_config():
  return mgce_table3_protocol("../shared/data/adult.npz")
