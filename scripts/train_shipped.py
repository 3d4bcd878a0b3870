"""train_shipped.py (`make weights`): the shipped student from its recipes, every stage in order, resuming.

    python scripts/train_shipped.py                  # soft labels, stages 1-3, then scripts/ship.py into weights/
    python scripts/train_shipped.py --dry_run        # print the commands (and which stages are done) only
    python scripts/train_shipped.py --no-ship        # train only

Each stage is its Train script with its recipe file (recipes/*.py) as a subprocess: ``python Train_3_Step.py
recipes/student_stage1_kd.py``. A stage whose deployable file and card already exist (soft labels: whose split
manifests exist) is skipped; an interrupted stage resumes by itself when this runs again. The recipes chain each
stage's deploy file (stage 4: its best.keras) to the next one's --init under runs/shipped/. The teacher is the
MCFF-L teacher_cpu that weights/teacher.keras held until the pretrained teacher replaced it (Train_1 is not
re-run): it is taken from git history (``--teacher_commit``) into runs/shipped/teacher_mcff.keras, its sha256
checked against the one its card recorded. The last step ships the last stage's deploy file (scripts/ship.py:
card, exports, checks).
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crackseg.config import configure  # noqa: E402

recipes = "recipes"               # folder of the recipe files named in --stages
# The shipped student is stage 3. Stages 4-5 (all four datasets) are the measured candidate that did not pass the
# DeepCrack guard (RESULTS.md, Four-dataset student): add ",Train_3_Step.py:student_stage4_mixed,
# Train_3_Step.py:student_stage5_sampling" to train (and ship) it.
stages = ("Train_2_Step.py:soft_labels", "Train_3_Step.py:student_stage1_kd", "Train_3_Step.py:student_stage2_gt",
          "Train_3_Step.py:student_stage3_bce")  # SCRIPT:RECIPE, in order
student_flags = ""                # extra flags for every Train_3 stage, e.g. "--max_minutes=60" (flags win)
ship = True                       # end with scripts/ship.py on the last stage's deploy file
weights_dir = "weights"           # scripts/ship.py --weights_dir
ship_flags = ""                   # extra flags for scripts/ship.py, e.g. "--no-cpu_int8"
dry_run = False                   # print the commands only
teacher_commit = "4cca5c5"        # the git commit whose weights/teacher.keras is the shipped student's teacher
teacher_file = "runs/shipped/teacher_mcff.keras"  # where recipes/soft_labels.py reads it
teacher_sha256 = "abb4c08389694f74099c7c8f58487eeabb6f5d412ea86919a0026af4ef9ebc73"  # its card's, as shipped

config = configure(globals(), __doc__)

from crackseg.card import CardError, read_card  # noqa: E402
from crackseg.config import ConfigError, read_recipe  # noqa: E402


def plan() -> list[dict]:
    """Each stage: its script, recipe file, command, where it writes and whether that is already there."""
    out = []
    for spec in stages:
        script, _, name = spec.partition(":")
        if not name or not (ROOT / script).is_file():
            raise ConfigError(f"--stages: {spec!r} is not SCRIPT:RECIPE with SCRIPT one of the Train scripts")
        recipe = Path(recipes) / f"{name}.py"
        values = read_recipe(recipe)  # where it writes; the script checks every key when it runs
        command = [sys.executable, script, str(recipe)]
        if script == "Train_3_Step.py":
            command += shlex.split(student_flags)
            deploy = values.get("deploy")
            if not deploy:
                raise ConfigError(f"{recipe}: a Train_3 recipe names its deploy file (the next stage's --init)")
            done = Path(deploy).is_file() and card_matches(deploy)
            target = deploy
        else:
            target = values.get("out", "runs/soft_labels")
            splits = values.get("splits", ("train", "val"))
            done = all((Path(target) / split / "manifest.json").is_file() for split in splits)
        out.append({"name": name, "script": script, "recipe": str(recipe), "command": command, "target": target,
                    "done": done})
    return out


def restore_teacher() -> None:
    """The student's teacher from git history into ``teacher_file`` (atomically), unless it is already there;
    ConfigError when git cannot give it or its sha256 is not the pinned one."""
    from crackseg.io import atomic_path, sha256

    dest = Path(teacher_file)
    if dest.is_file() and sha256(dest) == teacher_sha256:
        return
    try:
        blob = subprocess.run(["git", "show", f"{teacher_commit}:weights/teacher.keras"], cwd=ROOT,
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(f"cannot take the student's teacher from git ({teacher_commit}:weights/teacher.keras): "
                          f"{exc}; a full clone (not a shallow one) holds it") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        Path(tmp).write_bytes(blob)
    if sha256(dest) != teacher_sha256:
        dest.unlink()
        raise ConfigError(f"{teacher_commit}:weights/teacher.keras is not the pinned teacher (sha256 differs)")
    print(f"teacher: {dest} from git {teacher_commit}")


def card_matches(model: str) -> bool:
    try:
        read_card(model, verify=True)
        return True
    except CardError:
        return False


def main() -> int:
    steps = plan()
    last_deploy = next((s["target"] for s in reversed(steps) if s["script"] == "Train_3_Step.py"), None)
    ship_command = ([sys.executable, "scripts/ship.py", f"--model={last_deploy}", f"--weights_dir={weights_dir}",
                     *shlex.split(ship_flags)] if ship and last_deploy else None)
    if not dry_run and any(not s["done"] and s["script"] == "Train_2_Step.py" for s in steps):
        restore_teacher()
    for i, step in enumerate(steps, 1):
        status = f"done ({step['target']} is there), skipped" if step["done"] else "to run"
        print(f"[{i}/{len(steps)}] {step['name']}: {status}\n    $ {shlex.join(step['command'][1:])}", flush=True)
        if dry_run or step["done"]:
            continue
        result = subprocess.run(step["command"], cwd=ROOT)
        if result.returncode != 0:
            print(f"error: stage {step['name']} failed (exit {result.returncode}); fix it and run this again "
                  f"(finished stages are skipped, this one resumes)", file=sys.stderr)
            return 1
    if ship_command:
        print(f"[ship] {last_deploy} -> {weights_dir}\n    $ {shlex.join(ship_command[1:])}", flush=True)
        if not dry_run:
            result = subprocess.run(ship_command, cwd=ROOT)
            if result.returncode != 0:
                print(f"error: shipping {last_deploy} failed (exit {result.returncode}); {weights_dir} is unchanged",
                      file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    try:
        sys.exit(main())
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
