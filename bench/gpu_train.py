"""Training on a GPU worker through Ray Train (``use_gpu``), against the plain CPU loop.

For a machine with a CUDA GPU; exits 2 without one (every path is tested on CPU by
tests/training/test_ray_train.py). Generates a synthetic world and its examples unless
``EXAMPLES_DIR`` is given, trains ``--steps`` steps on CPU (plain loop) and on each GPU
(Ray Train, one worker per GPU), and writes docs/bench/gpu_train.json.

    .venv/bin/python bench/gpu_train.py [EXAMPLES_DIR] --steps 300
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_results import add_json_out, write_results  # noqa: E402


def _examples(tmp: Path) -> Path:
    from training.pinnerformer import PinnerFormerConfig, parse_day, run_daily_embeddings
    from transact.data.examples import ExampleConfig, build_examples
    from transact.data.synthetic import WorldConfig, generate_world

    generate_world(tmp / "world", WorldConfig(n_users=1500, n_days=14, seed=0))
    stats = run_daily_embeddings(tmp / "world", tmp / "pf", PinnerFormerConfig(
        train_steps=150, history_len=128, window_days=2, warmup_days=2))
    build_examples(tmp / "world", tmp / "examples", ExampleConfig(
        user_emb_path=stats.output_dir, start_ms=parse_day(stats.days[0])))
    return tmp / "examples"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("examples_dir", type=Path, nargs="?")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=1024)
    add_json_out(parser, "gpu_train")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU here: this script is for a machine that has one", file=sys.stderr)
        return 2
    from training.ray_train import fit_on_ray
    from training.retrain import RayTrainSettings, RetrainConfig
    from training.train import TrainConfig, load_training_data, train_model
    from transact.runtime import start_local_ray

    tmp = Path(tempfile.mkdtemp(prefix="gpu_train_"))
    examples = args.examples_dir or _examples(tmp)
    base = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, max_epochs=100,
                       eval_every_steps=args.steps, max_eval_requests=1000)
    data = load_training_data(examples, base.model.ranker.item_representation)
    runs = {}
    tick = time.perf_counter()
    cpu = train_model(base, data)
    runs["cpu_plain"] = {"wall_s": time.perf_counter() - tick,
                         "examples_per_s": cpu.examples_per_s, "val": cpu.val_metrics}
    gpus = torch.cuda.device_count()
    start_local_ray()
    cfg = RetrainConfig(examples_dir=str(examples), work_dir=str(tmp), backend="ray",
                        train=dataclasses.replace(base, max_steps=args.steps // gpus),
                        ray=RayTrainSettings(num_workers=gpus, use_gpu=True))
    tick = time.perf_counter()
    gpu = fit_on_ray(cfg, dataclasses.replace(data, train=data.train.take(
        __import__("numpy").zeros(0, "int64"))), tmp / "ray")
    runs[f"ray_gpu_x{gpus}"] = {"wall_s": time.perf_counter() - tick,
                                "examples_per_s": gpu.examples_per_s * gpus,
                                "val": gpu.val_metrics}
    for name, run in runs.items():
        print(f"{name}: {run['wall_s']:.1f} s wall, {run['examples_per_s']:.0f} ex/s, "
              f"val AUC save {run['val'].get('auc_save', float('nan')):.3f}")
    write_results("gpu_train", args, {"runs": runs, "gpu": torch.cuda.get_device_name(0)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
