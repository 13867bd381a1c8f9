"""Images/s of the streaming input pipeline (``gence_jax.data.stream``) at 224x224 with the protocols' augmentations,
and how many grain worker processes one GPU needs to be fed at the estimated ResNet-50 step time.

Usage::

    python benchmarks/stream.py                                              # 256 JPEGs, 3 rounds, about 1-2 min
    python benchmarks/stream.py --rounds 5 --json benchmarks/results/stream_cpu_2core.json

What is timed: ``StreamingDataset.train_batches`` (the pipeline a run reads: JPEG decode with PIL, the training
transform, ImageNet mean/std normalisation to float32, one batch per grain element) on a Clothing-1M-layout folder of
``--images`` generated JPEGs (quality 90, a smooth random image plus pixel noise: about 30 KB each, as web photos of
this size), sized like the releases: WebVision's resized images and Clothing-1M's have a shorter side of about 256, so
the sizes cycle through 256x341, 341x256, 256x256 and 300x400. Recipes:

* ``webvision``: ``shift,jitter,flip`` (MGCE Appendix G.2: resize to 224x224, width/height shift, colour jitter, flip);
* ``clothing1m``: ``crop,flip`` (shorter side 256, random 224 crop, flip: DivideMix's Clothing-1M loader);
* ``rrc``: ``rrc,jitter,flip`` (random-resized crop, the ImageNet recipe).

Each setting (recipe x workers in ``--workers``, 0 = the training process itself with grain's 2 read threads, N > 0 =
N grain worker processes) is timed once per round, the settings in a rotated order each round (round robin, so a
change in the machine's load falls on all of them); a timing starts after the first batch (process start-up and the
batches already buffered excluded, see ``time_setting``) and covers ``--batches`` batches of ``--batch-size``.
Reported: the median over rounds of images/s, and images/s per worker process. Workers one GPU needs = ceil(GPU
images/s / images/s per worker), with the GPU's rate from a published ResNet-50 throughput (:data:`GPU_RATES`:
NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5, 1x A100 80GB, mixed precision, 2470 img/s, and TF32, 938
img/s; an estimate, see experiments/PROTOCOLS.md).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

RECIPES = {"webvision": "shift,jitter,flip", "clothing1m": "crop,flip", "rrc": "rrc,jitter,flip"}
SIZES = ((341, 256), (256, 341), (256, 256), (400, 300))  # (width, height)
#: NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance:
#: NVIDIA DGX A100 (8x A100 80GB)", 1 GPU, pytorch-21.03 NGC container: TF32 938 img/s, mixed precision 2470 img/s.
GPU_RATES = {"A100 80GB, mixed precision": 2470.0, "A100 80GB, TF32": 938.0}


def write_jpegs(root: str, n: int, seed: int = 0) -> None:
  """``n`` JPEGs in Clothing-1M's layout (``images/...``, the five key lists): every image in the training list."""
  from PIL import Image

  rng = np.random.default_rng(seed)
  keys = []
  for i in range(n):
    w, h = SIZES[i % len(SIZES)]
    base = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    noisy = np.clip(np.asarray(base, np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255).astype(np.uint8)
    key = f"images/{i % 10}/{i:06d}.jpg"
    os.makedirs(os.path.join(root, os.path.dirname(key)), exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
    with open(os.path.join(root, key), "wb") as f:
      f.write(buf.getvalue())
    keys.append((key, i % 14))

  def write(name, lines):
    with open(os.path.join(root, name), "w") as f:
      f.write("\n".join(lines) + "\n")

  write("noisy_label_kv.txt", [f"{k} {y}" for k, y in keys])
  write("noisy_train_key_list.txt", [k for k, _ in keys])
  write("clean_label_kv.txt", [f"{k} {y}" for k, y in keys[:14]])
  write("clean_val_key_list.txt", [k for k, _ in keys[:7]])
  write("clean_test_key_list.txt", [k for k, _ in keys[7:14]])


def time_setting(ds, recipe: str, workers: int, batch_size: int, batches: int, seed: int) -> float:
  """Images/s in the steady state of ``workers`` grain processes with the ``recipe`` ops: the batches the buffers
  filled while the first one was made (grain's 2 read-ahead batches, and 2 per worker process: one in its buffer,
  one in flight) are taken untimed, then ``batches`` batches are timed; the loop consumes faster than the pipeline
  produces, so the buffers stay empty and the time is the pipeline's."""
  it = ds.train_batches(batch_size, seed=seed, augment=RECIPES[recipe], num_workers=workers, process_index=0,
                        process_count=1)
  first = next(it)
  assert first["x"].shape == (batch_size, 224, 224, 3) and first["x"].dtype == np.float32
  for _ in range(2 + 2 * workers):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t0
  del it  # stops grain's worker processes
  return batches * batch_size / seconds


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--images", type=int, default=256)
  ap.add_argument("--batch-size", type=int, default=32)
  ap.add_argument("--batches", type=int, default=4, help="timed batches per setting and round")
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
  ap.add_argument("--json", default=None, help="write the results here")
  args = ap.parse_args(argv)

  from gence_jax.data import load_stream_dataset

  settings = [(r, w) for r in args.recipes for w in args.workers]
  runs: dict[str, list[float]] = {f"{r}/{w}": [] for r, w in settings}
  t_start = time.time()
  with tempfile.TemporaryDirectory() as root:
    write_jpegs(root, args.images)
    sizes = [os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs if f.endswith(".jpg")]
    ds = load_stream_dataset(f"clothing1m:{root}", seed=0, empty_classes="ignore")
    for r in range(args.rounds):
      order = settings[r % len(settings):] + settings[: r % len(settings)]
      for recipe, workers in order:
        runs[f"{recipe}/{workers}"].append(time_setting(ds, recipe, workers, args.batch_size, args.batches, seed=r))
  results = {}
  for recipe, workers in settings:
    rate = statistics.median(runs[f"{recipe}/{workers}"])
    results.setdefault(recipe, {})[str(workers)] = {
      "images_per_s": rate,
      "images_per_s_per_worker": rate / workers if workers else None,
      "runs": runs[f"{recipe}/{workers}"],
    }
  needed = {}
  for recipe in args.recipes:
    one = [results[recipe][str(w)]["images_per_s_per_worker"] for w in args.workers if w == 1]
    per_worker = one[0] if one else max(results[recipe][str(w)]["images_per_s"] / max(w, 1) for w in args.workers)
    needed[recipe] = {gpu: math.ceil(rate / per_worker) for gpu, rate in GPU_RATES.items()}

  print(f"streaming pipeline, 224x224 float32 batches of {args.batch_size}; {args.images} generated JPEGs "
        f"({statistics.median(sizes) / 1024:.0f} KB median); median of {args.rounds} rounds x {args.batches} batches")
  print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average at the end "
        f"{os.getloadavg()[0]:.1f}")
  header = "".join(f"{str(w) + ' workers':>14}" for w in args.workers)
  print(f"{'recipe':<12}{'ops':<20}{header}{'per worker':>13}")
  for recipe in args.recipes:
    row = "".join(f"{results[recipe][str(w)]['images_per_s']:>14.0f}" for w in args.workers)
    one = results[recipe].get("1", {}).get("images_per_s_per_worker")
    print(f"{recipe:<12}{RECIPES[recipe]:<20}{row}{(f'{one:>13.0f}' if one else '')}")
  print("images/s one GPU consumes (ResNet-50 224x224 training, published): "
        + ", ".join(f"{gpu}: {rate:.0f} (batch 512: {512 / rate:.3f} s/step)" for gpu, rate in GPU_RATES.items()))
  for recipe, n in needed.items():
    print(f"workers one GPU needs, {recipe}: " + ", ".join(f"{gpu}: {k}" for gpu, k in n.items()))
  out = {
    "command": "python " + " ".join(["benchmarks/stream.py", *(argv if argv is not None else sys.argv[1:])]),
    "host": {"cpus": os.cpu_count(), "load_average_end": os.getloadavg(), "python": platform.python_version()},
    "images": args.images,
    "jpeg_kb_median": statistics.median(sizes) / 1024,
    "image_sizes": [list(s) for s in SIZES],
    "batch_size": args.batch_size,
    "batches_per_timing": args.batches,
    "rounds": args.rounds,
    "recipes": {r: RECIPES[r] for r in args.recipes},
    "results": results,
    "gpu_images_per_s": GPU_RATES,
    "gpu_source": "NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, DGX A100 "
    "(8x A100 80GB), 1 GPU, pytorch-21.03 NGC container",
    "workers_needed": needed,
    "seconds": time.time() - t_start,
  }
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == "__main__":
  main()
