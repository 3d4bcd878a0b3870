"""`make demo`: the whole chain on data this project generates, no dataset needed.

1. a synthetic pavement set + video (datasets/synthetic.py);
2. the model: the shipped ``weights/student.onnx`` when it exists, else a student trained here for a few epochs
   (Train_1_Step.py) and exported (TensorRT.py);
3. evaluate.py on the synthetic images (metrics table + JSON);
4. PC.py listening on loopback (its live page on a free loopback port, URL printed), camera.py running the video
   headless, saving overlays and streaming them.

Everything lands in demo_out/ (see the summary printed at the end).
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "demo_out"
PY = sys.executable
FRAMES = 24


def run(*args: str) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run([PY, *args], cwd=ROOT, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    data = OUT / "data"
    run("datasets/synthetic.py", "--out", str(data), "--count", str(FRAMES), "--size", "256", "320", "--seed", "7",
        "--video", str(OUT / "road.mp4"))
    shipped = ROOT / "weights" / "student.onnx"
    if shipped.is_file():
        model = shipped
        print(f"using the shipped model {model.relative_to(ROOT)}")
    else:  # no trained weights in this checkout: train a student briefly on synthetic crack images
        train = OUT / "train"
        run("datasets/synthetic.py", "--out", str(train), "--count", "48", "--size", "128", "128", "--seed", "1")
        run("Train_1_Step.py", f"--data={train}", "--lists=none", "--preset=student", "--epochs=4", "--crop=128",
            "--batch_size=4", "--optimizer=adam", "--lr=2e-3", "--val_fraction=0.2", "--profile_size=128",
            "--samples_per_epoch=0",  # one tile per image, as the demo was timed
            f"--out={OUT / 'run'}")
        keras_model = OUT / "student_demo.keras"
        run("-c", "import sys, keras; sys.path.insert(0, '.'); import model, crackseg.losses, crackseg.keras_metrics;"
            f"m = keras.models.load_model({str(OUT / 'run' / 'best.keras')!r});"
            f"model.deploy_model(m).save({str(keras_model)!r})")
        model = OUT / "student_demo.onnx"
        run("TensorRT.py", f"--model={keras_model}", f"--onnx={model}", f"--data={train}", "--lists=none")
    run("evaluate.py", f"--model={model}", f"--images={data / 'images'}", f"--masks={data / 'masks'}",
        f"--json={OUT / 'eval.json'}")

    address = f"tcp://127.0.0.1:{free_port()}"
    shutil.rmtree(OUT / "received", ignore_errors=True)  # PC.py appends to headers.jsonl: count this run only
    receiver = subprocess.Popen([PY, "PC.py", f"--bind={address}", "--headless", f"--save={OUT / 'received'}",
                                 f"--max_frames={FRAMES}", "--max_seconds=120", "--http=127.0.0.1:0"], cwd=ROOT)
    time.sleep(1.0)
    run("camera.py", f"--source={OUT / 'road.mp4'}", f"--model={model}", "--headless",
        f"--save={OUT / 'overlays'}", f"--send={address}", "--device=demo", f"--max_frames={FRAMES}")
    receiver.wait(timeout=150)
    headers = (OUT / "received" / "headers.jsonl").read_text().splitlines()
    last = json.loads(headers[-1]) if headers else {}
    print("\n== demo outputs ==")
    print(f"metrics on the synthetic set:   {OUT / 'eval.json'}")
    print(f"overlay frames from camera.py:  {OUT / 'overlays'}/")
    print(f"frames PC.py received:          {OUT / 'received' / 'demo'}/  ({len(headers)} frames, headers in "
          f"received/headers.jsonl)")
    if last:
        print(f"last frame's crack statistics:  {last.get('stats')}")


if __name__ == "__main__":
    main()
