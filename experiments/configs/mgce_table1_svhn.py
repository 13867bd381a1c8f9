"""MGCE paper (Bondugula et al., AISTATS 2026), Table 1, SVHN with ResNet-18: the protocol of
`gence_jax.train.protocols.mgce_protocol`, beta selected on validation over 1, 1.43, 2, 3, 4, 6, 8, 11 against
generalized CE (q = 0.7), cross-entropy and MAE. TFDS `svhn_cropped` data and a GPU; expected time: PROTOCOLS.md.

    gence-jax compare --config experiments/configs/mgce_table1_svhn.py --workdir runs/mgce_table1/svhn \
        --losses mgce:beta=1 mgce:beta=1.43 mgce:beta=2 mgce:beta=3 mgce:beta=4 mgce:beta=6 mgce:beta=8 mgce:beta=11 \
            generalized_ce:q=0.7 cross_entropy mae \
        --regimes clean symmetric:0.2 symmetric:0.4 --seeds 0 1 2 3 4 --select mgce \
        --columns accuracy sce nll ece

165 runs (11 loss specs x 3 regimes x 5 seeds).
One run of the grid:

    gence-jax train --config experiments/configs/mgce_table1_svhn.py --workdir runs/one \
        --set loss.name=mgce --set loss.hparams.beta=2.0 --set dataset.regimes=symmetric:0.2 --set seed=0

"""

from gence_jax.train.protocols import mgce_protocol


def get_config():
  return mgce_protocol("svhn_cropped", "resnet18")
