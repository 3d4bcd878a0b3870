"""camera_modes.py: camera.py's three --throughput settings on one folder of real images, side by side.

    python scripts/camera_modes.py                                   # 100 validation images, 2 rounds, all modes
    python scripts/camera_modes.py --images=40 --rounds=3 --json_out=results/camera_modes.json
    python scripts/camera_modes.py --video=544x384 --json_out=results/camera_modes_video.json   # one frame size

Each round runs ``camera.py --source=FOLDER --headless --quiet`` once per mode (off: the overlapped latency path;
on: OpenVINO's asynchronous requests; auto: both measured on the first frames, then the faster), in turn, so load
changes hit every mode alike. The folder holds symbolic links to the first ``--images`` of each dataset of
``--subset`` in turn (the mixed sizes a folder of crops has); with ``--video=WxH`` the same images, resized to one
size, become the frames of an MJPG video at 10 FPS instead (what a road camera records). The figure is camera.py's
own ``done:`` line (frames over the wall time of its frame loop: the model load is excluded, the first frames'
compile is not), and auto's ``throughput auto:`` line says what it measured and chose.
"""
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crackseg.config import configure  # noqa: E402

model = "weights/student.onnx"    # camera.py --model
precision = "auto"                # camera.py --precision
data = "../shared/datasets"
subset = "datasets/splits/val.txt"  # images are taken from this list, the datasets interleaved
images = 100
rounds = 2
modes = "off,on,auto"             # camera.py --throughput values, run in this order each round
video = ""                        # WxH: run on a video of the images at this one size instead of the folder
json_out = "results/camera_modes.json"

config = configure(globals(), __doc__)

DONE = re.compile(r"^done: (\d+) frames in ([\d.]+) s \(([\d.]+) FPS\)", re.M)
AUTO = re.compile(r"^throughput auto: .*$", re.M)


def interleaved(list_file: Path, count: int) -> list[str]:
    """The first ``count`` entries of ``list_file`` taking one per dataset (first path part) in turn."""
    by_set: dict[str, list[str]] = {}
    for line in list_file.read_text().split():
        by_set.setdefault(line.split("/")[0], []).append(line)
    out: list[str] = []
    while len(out) < count and any(by_set.values()):
        for name in sorted(by_set):
            if by_set[name] and len(out) < count:
                out.append(by_set[name].pop(0))
    return out


def write_video(images: list[Path], path: str, size: str) -> None:
    """``images`` resized to ``size`` (WxH) as the frames of an MJPG video at 10 FPS."""
    import cv2

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"error: --video={size}: expected WIDTHxHEIGHT, e.g. 544x384") from None
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    for image in images:
        writer.write(cv2.resize(cv2.imread(str(image)), (width, height), interpolation=cv2.INTER_AREA))
    writer.release()


def cpu_line() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    name = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.*)$", text, re.M) or [None, ""])[1].split())
    units = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if f in flags]
    return f"{name.group(1) if name else platform.processor()}, {os.cpu_count()} cores, {' '.join(units)}"


def main() -> int:
    entries = interleaved(Path(subset), images)
    if not entries:
        print(f"error: {subset}: no images listed", file=sys.stderr)
        return 1
    runs: dict[str, list[dict]] = {mode: [] for mode in modes.split(",")}
    with tempfile.TemporaryDirectory() as folder:
        for i, entry in enumerate(entries):
            source = (Path(data) / entry).resolve()
            if not source.is_file():
                print(f"error: {source}: listed in {subset} but not found", file=sys.stderr)
                return 1
            os.symlink(source, Path(folder) / f"{i:04d}{source.suffix}")
        target = folder
        if video:
            target = str(Path(folder) / "frames.avi")
            write_video(sorted(Path(folder).iterdir()), target, video)
        for round_ in range(rounds):
            for mode in runs:
                cmd = [sys.executable, str(ROOT / "camera.py"), f"--source={target}", "--headless", "--quiet",
                       f"--model={model}", f"--precision={precision}", f"--throughput={mode}"]
                done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                found = DONE.search(done.stdout)
                if done.returncode or not found:
                    print(f"error: camera.py --throughput={mode} failed (exit {done.returncode}): "
                          f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}", file=sys.stderr)
                    return 1
                choice = AUTO.search(done.stdout)
                runs[mode].append({"round": round_, "frames": int(found[1]), "seconds": float(found[2]),
                                   "fps": float(found[3]), **({"auto": choice[0]} if choice else {})})
                print(f"round {round_} --throughput={mode}: {found[3]} FPS"
                      + (f"  ({choice[0]})" if choice else ""), flush=True)
    summary = {mode: sum(r["fps"] for r in rs) / len(rs) for mode, rs in runs.items()}
    print("mean FPS: " + ", ".join(f"{m} {v:.2f}" for m, v in summary.items()))
    if json_out:
        from crackseg.io import atomic_write_json

        atomic_write_json(json_out, {"command": " ".join(["python scripts/camera_modes.py", *sys.argv[1:]]),
                                     "machine": cpu_line(), "model": model, "precision": precision,
                                     "images": len(entries), "subset": subset, "entries": entries,
                                     "video": video or None, "mean_fps": summary, "runs": runs})
        print(f"written: {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
