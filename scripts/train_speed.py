"""train_speed.py: training tiles/s of presets under fp32 and mixed_bfloat16, side by side in one run.

    python scripts/train_speed.py                                          # lite0_unet, lite2_unet, teacher_cpu
    python scripts/train_speed.py --presets=lite0_unet --policies=float32 --steps=3 --json_out=""

Each (preset, policy) is built and compiled as Train_1 does (BCE + Dice on the four heads, Adam; a pretrained
teacher with its encoder at a tenth of the rate), then timed in ``--rounds`` interleaved rounds of ``--steps``
``train_on_batch`` calls on one fixed random batch (``--batch_size`` tiles of ``--crop``^2), each round in the
reverse order of the one before, so a shared machine's drift reaches every row alike; the figure is the median of
the rounds. Model cost only: the input pipeline is measured by benchmark.py.
"""
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crackseg.config import configure  # noqa: E402

presets = "lite0_unet,lite2_unet,teacher_cpu"
policies = "float32,mixed_bfloat16"    # Keras dtype policies
crop = 256
batch_size = 8
steps = 4
rounds = 3
json_out = "results/teacher_train_speed.json"

config = configure(globals(), __doc__)


def build(preset: str, policy: str):
    import keras

    import model as mcff
    from crackseg.losses import make_loss
    from crackseg.training import compile_model

    keras.mixed_precision.set_global_policy(policy)
    try:
        net = mcff.build_model(preset, None)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loss = make_loss("bce_dice", 200.0, 5.0)
    pretrained = mcff.is_teacher(preset)
    return compile_model(net, {h: loss for h in mcff.HEADS}, 1e-3, "adam",
                         encoder_lr_scale=0.1 if pretrained else 1.0)


def main() -> dict:
    import numpy as np

    from crackseg.io import atomic_write_json
    from crackseg.precision import machine_line

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch_size, crop, crop, 3)).astype(np.float32)
    crack = (rng.random((batch_size, crop, crop)) < 0.05).astype(np.float32)
    y = np.stack([1 - crack, crack], axis=-1)
    arms = [(p.strip(), q.strip()) for p in presets.split(",") if p.strip() for q in policies.split(",") if q.strip()]
    nets = {}
    for arm in arms:
        nets[arm] = build(*arm)
        nets[arm].train_on_batch(x, {h: y for h in nets[arm].output_names})  # tracing
        print(f"built {arm[0]} under {arm[1]}")
    times = {arm: [] for arm in arms}
    order = list(arms)
    for r in range(rounds):
        for arm in order:
            net = nets[arm]
            start = time.perf_counter()
            for _ in range(steps):
                net.train_on_batch(x, {h: y for h in net.output_names})
            times[arm].append(steps * batch_size / (time.perf_counter() - start))
        print(f"round {r + 1} of {rounds}: " + ", ".join(f"{a[0]}/{a[1]} {times[a][-1]:.2f}" for a in order))
        order.reverse()
    rows = []
    for preset in dict.fromkeys(a[0] for a in arms):
        base = statistics.median(times[(preset, "float32")]) if (preset, "float32") in times else None
        for policy in dict.fromkeys(a[1] for a in arms):
            tiles = statistics.median(times[(preset, policy)])
            rows.append({"preset": preset, "policy": policy, "tiles_per_s": round(tiles, 3),
                         "vs_float32": round(tiles / base, 3) if base else None,
                         "params": int(nets[(preset, policy)].count_params())})
    print(f"{'preset':14s} {'policy':16s} {'tiles/s':>8s} {'vs fp32':>8s} {'params':>10s}")
    for row in rows:
        ratio = "n/a" if row["vs_float32"] is None else f"{row['vs_float32']:.2f}x"
        print(f"{row['preset']:14s} {row['policy']:16s} {row['tiles_per_s']:8.2f} {ratio:>8s} {row['params']:10,d}")
    report = {"command": " ".join(["python", "scripts/train_speed.py", *sys.argv[1:]]), "machine": machine_line(),
              "crop": crop, "batch_size": batch_size, "steps": steps, "rounds": rounds, "rows": rows}
    if json_out:
        atomic_write_json(json_out, report)
        print(f"wrote {json_out}")
    return report


if __name__ == "__main__":
    main()
