"""One process of a multi-host training run, for tests/test_train_multihost.py (not a test module itself).

    python tests/_multihost_worker.py OUT_DIR WORKDIR NUM_PROCESSES PROCESS_ID PORT [KEY=VALUE ...]

Runs `gence_jax.train.train_and_evaluate` with the given config overrides. With NUM_PROCESSES > 1 it joins a
`jax.distributed` job (coordinator 127.0.0.1:PORT, gloo CPU collectives) through the config's ``distributed.*``
keys, the same path as ``gence-jax train --set distributed.coordinator_address=...``. Each process reads its own rows
of every global batch (``process_index``/``process_count`` in the data iterators).

Writes to OUT_DIR, per process (suffix ``_<PROCESS_ID>``):
  * ``state_<pid>.npz``: every leaf of the final checkpoint (params, batch_stats, opt_state, step), keyed by path;
  * ``batch_<pid>.npz``: the labels/mask/inputs this process feeds in the first train step;
  * ``info_<pid>.json``: process/device counts and the test metrics.
The device count per process comes from the parent's ``XLA_FLAGS``.
"""

import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _flatten(tree, prefix=""):
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(_flatten(v, f"{prefix}{k}/"))
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      out.update(_flatten(v, f"{prefix}{i}/"))
  elif tree is not None:
    import numpy as np

    out[prefix.rstrip("/")] = np.asarray(tree)
  return out


def main(argv):
  out_dir, workdir, num_processes, process_id, port = argv[:5]
  overrides = list(argv[5:])
  num_processes, process_id = int(num_processes), int(process_id)

  import jax

  if num_processes > 1:
    # gence_jax.train.distributed.initialize does this too; done here first so the test does not depend on it
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  import numpy as np
  import orbax.checkpoint as ocp

  from gence_jax import train
  from gence_jax.data import load_dataset

  config = train.load_config(None)
  if num_processes > 1:
    overrides += [
      f"distributed.coordinator_address=127.0.0.1:{port}",
      f"distributed.num_processes={num_processes}",
      f"distributed.process_id={process_id}",
    ]
  config = train.apply_overrides(config, overrides)
  results = train.train_and_evaluate(config, workdir)
  assert jax.process_count() == num_processes, (jax.process_count(), num_processes)
  assert jax.process_index() == process_id

  # the rows this process fed in step 0, from the same iterator call the loop makes
  data = load_dataset(
    config.dataset.name,
    seed=config.seed,
    val_fraction=config.dataset.val_fraction,
    regimes=config.dataset.regimes or (),
    as_images=config.dataset.as_images,
  )
  first = next(
    data.train_batches(
      config.train.batch_size,
      seed=config.seed,
      num_epochs=1,
      augment=config.dataset.augment,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
  )
  np.savez(os.path.join(out_dir, f"batch_{process_id}.npz"), **first)

  ckpt_dir = os.path.join(workdir, "checkpoints")
  step = max(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  state = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(step), "default"))
  np.savez(os.path.join(out_dir, f"state_{process_id}.npz"), **_flatten(state))
  with open(os.path.join(out_dir, f"info_{process_id}.json"), "w") as f:
    json.dump(
      {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "final_step": step,
        "test_raw": results["test"]["raw"],
      },
      f,
    )
  if num_processes > 1:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
