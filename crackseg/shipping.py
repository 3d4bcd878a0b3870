"""Shipping a trained student: checks, the stage history of its card, and the atomic hand-over into ``weights/``.

``scripts/ship.py`` is the command; this module is what it does (no TensorFlow here: the exports run as
``TensorRT.py`` in a subprocess, the one export path):

1. ``deployed_model``: the deployable ``.keras`` of a run (``--run``) or the file itself (``--model``), refused in one
   line unless its run is finished (every epoch, or early stopping) and its card (written by Train_3 beside it)
   records the very bytes of the file;
2. ``stage_history``: every stage that led to it, oldest first, read from the run folders (``config.json``,
   ``state.json``) and the cards beside each stage's deployable file, followed through ``initial_weights``;
3. ``ship``: copies the model and writes its card (every field from code) into a staging folder beside
   ``weights/``, runs ``TensorRT.py`` there (ONNX, fast, int8, each parity-checked against Keras), and only when all
   of that passed hands the whole set over at once. A failed check leaves ``weights/`` as it was.

The hand-over (``hand_over``): the staging folder's ``next/`` becomes the new ``weights/`` -- every file already
there hard-linked (copied where links are not possible), the new files moved in -- and is swapped with ``weights/``
by one atomic exchange of the two folder names (Linux ``renameat2(RENAME_EXCHANGE)``). ``weights/`` stays a plain
folder of plain files, so every reader (the engines, camera.py, the tests) sees the old set or the new one, never a
mix, and a kill at any point leaves one of them. Where no exchange is possible (not Linux, a file system without
it, ``weights/`` a mount point or its parent read-only) the files are renamed one by one after a commit record is
written to the staging folder: a kill then leaves a set that the next run completes before anything else (and every
engine refuses a model file its card does not vouch for in between). Leftover staging folders of runs that died are
swept at the start of the next run (``sweep``); a live run's is locked (POSIX ``flock``) and left alone. Files
written into ``weights/`` by another program while a ship runs are not carried over.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Iterable

from .card import CardError, card_path, read_card, write_card
from .io import sha256

ROOT = Path(__file__).resolve().parents[1]
MAX_STAGES = 32  # a longer initial_weights chain is a loop


class ShipError(RuntimeError):
    """A model that cannot be shipped (unfinished run, missing or mismatched card, a failed export check); one line."""


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ShipError(f"{path}: missing; {what}") from None
    except (OSError, ValueError) as exc:
        raise ShipError(f"{path}: unreadable ({exc})") from None


def run_status(run: str | Path, card: dict | None = None) -> tuple[dict, dict]:
    """``(config, state)`` of a finished run folder; ShipError when it is not one or not finished.

    Finished: every epoch done, or early stopping ended it, or (with ``card``, the card Train_3 wrote beside the
    deploy file after the run returned) its ``--max_minutes`` limit did and nothing was trained after that deploy.
    An interrupted run (killed, or going on) is not finished."""
    run = Path(run)
    if not run.is_dir():
        raise ShipError(f"{run}: run folder not found")
    config = _read_json(run / "config.json", "not a Train_3 run folder")
    state = _read_json(run / "state.json", "the run has not finished an epoch yet")
    epochs, done = int(config.get("epochs", 0)), int(state.get("epoch", 0))
    callbacks = state.get("callbacks") or []
    stopped = len(callbacks) > 1 and bool((callbacks[1] or {}).get("stopped_epoch"))
    deployed_here = card is not None and card.get("epochs") == done
    if card is not None and "epochs" in card and card["epochs"] != done:
        raise ShipError(f"{run}: trained to epoch {done} after this file was deployed (epoch {card['epochs']}); "
                        f"let the run finish (its Train_3 command resumes and deploys again), then ship")
    if done < epochs and not stopped and not (deployed_here and float(config.get("max_minutes") or 0) > 0):
        raise ShipError(f"{run}: not finished ({done} of {epochs} epochs); run its Train_3 command again (it "
                        f"resumes), then ship")
    return config, state


def deployed_model(model: str | Path = "", run: str | Path = "") -> Path:
    """The deployable ``.keras`` to ship: ``model``, or the ``deploy`` file of ``run``'s config; checked to be a
    finished run's deployed student with a card that records its bytes."""
    if bool(model) == bool(run):
        raise ShipError("give one of --model=DEPLOY.keras or --run=RUN_FOLDER")
    if run:
        config = _read_json(Path(run) / "config.json", "not a Train_3 run folder") if Path(run).is_dir() else {}
        if not Path(run).is_dir():
            raise ShipError(f"{run}: run folder not found")
        if not config.get("deploy"):
            raise ShipError(f"{run}: its config.json names no deploy file (not a Train_3 run)")
        model = config["deploy"]
    model = Path(model)
    if model.suffix.lower() != ".keras":
        raise ShipError(f"{model}: ship the deployable .keras file Train_3 wrote (its exports are made from it)")
    if not model.is_file():
        raise ShipError(f"{model}: model file not found" + (f" (the deploy file of {run}; not deployed yet?)"
                                                             if run else ""))
    try:
        card = read_card(model, verify=True)
    except CardError as exc:
        raise ShipError(f"not deployed by Train_3: {exc}") from None
    if not card.get("run"):
        raise ShipError(f"{card_path(model)}: names no run folder; ship a file Train_3 deployed")
    config, state = run_status(card["run"], card)
    if int(state.get("epoch", 0)) < int(config.get("epochs", 0)):
        print(f"{card['run']}: ended by its limits after {state['epoch']} of {config['epochs']} epochs "
              f"(early stopping or --max_minutes={config.get('max_minutes')}); shipping its deploy file")
    deploy = Path(config.get("deploy") or "")
    if not deploy.is_file() or not os.path.samefile(deploy, model):
        # e.g. a copy of the deploy file: fine when it is the same bytes as what the run deployed
        if not deploy.is_file() or sha256(deploy) != card["sha256"]:
            raise ShipError(f"{model}: not the deployable file of {card['run']} (that run deploys to {deploy})")
    return model


def _stage(model: Path, card: dict, required: bool = True) -> dict:
    """One stage's facts from its card and run folder. An earlier stage (``required=False``) whose run folder is
    gone or unfinished is described by its card alone (``run_folder`` says why)."""
    run = Path(card.get("run") or "")
    note = None
    try:
        config, state = run_status(run, card)
    except ShipError as exc:
        if required:
            raise
        config, note = {}, str(exc)
        state = {"epoch": card.get("epochs"), "best": card.get("best_val_score", card.get("best_val_real_f1"))}
    start = card.get("initial_weights") or {}
    validation = card.get("validation") or {}
    facts = {
        "model": str(model), "sha256": card.get("sha256"), "recipe": config.get("recipe", card.get("recipe")),
        "run": str(run), "epochs": state.get("epoch"), "best_score": state.get("best"),
        "monitor": state.get("monitor"), "initial_weights_sha256": start.get("sha256"),
        **{k: config.get(k, card.get(k)) for k in ("strategy", "alpha", "loss", "optimizer", "lr", "lists",
                                                    "sampling", "samples_per_epoch", "augment")},
        "teacher_sha256": (card.get("teacher") or {}).get("sha256"),
        "threshold": card.get("threshold"),
        "validation_strict_f1": (validation.get("strict") or {}).get("f1"),
    }
    if card.get("checkpoint"):
        facts["checkpoint"] = f"the run's {card['checkpoint']} (the next stage started from it, not from a deploy file)"
    if note:
        facts["run_folder"] = f"{note} (facts from the card)"
    return facts


def _recorded_only(start: dict) -> list[dict]:
    """Stages known only from what a later card recorded about its initial weights (the file or its card is gone,
    or the file changed since): those facts, following any ``initial_weights`` nested in them; newest first."""
    out: list[dict] = []
    while isinstance(start, dict) and start.get("path") and len(out) < MAX_STAGES:
        facts = {k: v for k, v in start.items() if k not in ("path", "initial_weights")}
        out.append({"model": start["path"], **facts, "card": None,
                    "note": "known only from the card of the stage after it (its file or card is not as used)"})
        start = start.get("initial_weights")
    return out


def _checkpoint_card(path: Path, digest: str | None) -> dict | None:
    """For initial weights that are a run's own checkpoint (``RUN/best.keras``: no card beside it), a card-like
    summary of that run from its folder (config.json, state.json) and, when the run deployed, its deploy file's card
    (threshold, validation); None when ``path`` is not in a run folder."""
    run = path.parent
    if not ((run / "config.json").is_file() and (run / "state.json").is_file()):
        return None
    try:
        config = json.loads((run / "config.json").read_text())
        state = json.loads((run / "state.json").read_text())
    except (OSError, ValueError):
        return None
    deployed: dict = {}
    if config.get("deploy") and Path(config["deploy"]).is_file():
        try:
            deployed = read_card(config["deploy"])
        except CardError:
            deployed = {}
        if Path(str(deployed.get("run", ""))).resolve() != run.resolve():
            deployed = {}
    start = {"path": config["init"], "sha256": config.get("init_sha256")} if config.get("init") else None
    return {**{k: deployed[k] for k in ("threshold", "validation", "teacher") if k in deployed},
            "run": str(run), "sha256": digest, "epochs": state.get("epoch"), "best_val_score": state.get("best"),
            "initial_weights": start, "checkpoint": path.name}


def stage_history(model: str | Path) -> list[dict]:
    """Every stage that made ``model``, oldest first: its recipe file(s), run folder, epochs, best validation score,
    the sha256 of the weights it started from, and the card's threshold and validation F1. Followed through each
    card's ``initial_weights`` to the card beside that file while that file is still the same bytes. A stage whose
    start file is gone or was overwritten ends the chain with what the later card recorded about it (``"card":
    None``; nested ``initial_weights`` followed); an earlier stage whose run folder is gone is told by its card."""
    stages: list[dict] = []
    path = Path(model)
    card = read_card(path)
    while True:
        stages.append(_stage(path, card, required=not stages))
        start = card.get("initial_weights") or {}
        if not start.get("path"):
            break
        if len(stages) >= MAX_STAGES:
            raise ShipError(f"{model}: more than {MAX_STAGES} stages of initial_weights (a loop?)")
        path = Path(start["path"])
        try:
            card = read_card(path, verify=True) if path.is_file() else None
        except CardError:
            card = None
        if card is None or card.get("sha256") != start.get("sha256"):
            card = _checkpoint_card(path, start.get("sha256"))
            if card is None:
                stages += _recorded_only(start)
                break
    return stages[::-1]


def ablation_choice(results: str | Path) -> tuple[Path, dict]:
    """The run a KD ablation (``scripts/kd_ablation.py``'s results file) chose to ship, and what its card records
    about the choice: the arm, the seed, the rule, the teacher (hash) and the measured gain with its interval. The
    file must still be the bytes the ablation scored."""
    path = Path(results)
    found = _read_json(path, "run scripts/kd_ablation.py first")
    choice = found.get("ship") or {}
    if not choice.get("model"):
        raise ShipError(f"{path}: the ablation has chosen no run to ship yet (no finished run with a validation score)")
    model = Path(choice["model"])
    model = model if model.is_absolute() else ROOT / model
    runs = {r["seed"]: r for r in found.get("arms", {}).get(choice["arm"], {}).get("runs", [])}
    entry = runs.get(choice["seed"])
    if entry is None:
        raise ShipError(f"{path}: the chosen run ({choice['arm']}, seed {choice['seed']}) is not among its runs")
    if not model.is_file():
        raise ShipError(f"{model}: the ablation's chosen student is missing (its run folder did not survive?)")
    if sha256(model) != entry["sha256"]:
        raise ShipError(f"{model}: sha256 differs from the one the ablation scored; re-run scripts/kd_ablation.py")
    teacher = found.get("teacher") or {}
    facts = {"arm": choice["arm"], "seed": choice["seed"], "rule": choice["rule"], "recipe": found.get("recipe"),
             "teacher": {k: teacher.get(k) for k in ("path", "sha256", "val_strict_f1", "temperature")},
             "gain_val_strict_f1": choice["gain_val_strict_f1"], "gain_test_strict_f1": choice["gain_test_strict_f1"],
             "val": entry.get("val"), "test": entry.get("test"), "results": str(path), "results_sha256": sha256(path)}
    return model, facts


def card_info(model: Path, ablation: dict | None = None) -> dict:
    """The shipped card's fields (before ``write_card`` adds ``model``, ``sha256`` and ``created``): the deployed
    student's card as Train_3 wrote it, its ``stages``, where it was shipped from and, for a student chosen by a KD
    ablation, ``kd_ablation`` (``ablation_choice``'s facts)."""
    card = read_card(model, verify=True)
    info = {k: v for k, v in card.items()
            if k not in ("model", "sha256", "created", "exports", "stages", "shipped", "kd_ablation")}
    info["stages"] = stage_history(model)
    info["shipped"] = {"from": str(model), "sha256": card["sha256"], "run": card["run"],
                       "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if ablation is not None:
        info["kd_ablation"] = ablation
    return info


def expected_exports(fast: bool, cpu_int8: bool) -> list[str]:
    return ["onnx"] + (["onnx_fast"] if fast or cpu_int8 else []) + (["openvino_int8"] if cpu_int8 else [])


def already_shipped(model: Path, weights_dir: Path, name: str, exports: list[str]) -> bool:
    """Whether ``weights_dir/name.keras`` is already these bytes with every export in its cards."""
    dest = weights_dir / f"{name}.keras"
    if not dest.is_file() or sha256(dest) != sha256(model):
        return False
    try:
        cards = [read_card(dest, verify=True)]
        if "onnx_fast" in exports:
            cards.append(read_card(weights_dir / f"{name}_fast.onnx", verify=True))
        if "openvino_int8" in exports:
            cards.append(read_card(weights_dir / f"{name}_int8.xml", verify=True))
    except CardError:
        return False
    found = {fmt for card in cards for fmt in card.get("exports", {})}
    return set(exports) <= found


def export_command(staged_keras: Path, data: str, lists: str, parity_images: int, fast: bool, cpu_int8: bool,
                   python: str = sys.executable) -> list[str]:
    """TensorRT.py on the staged model: ONNX (+ fast, + int8) beside it, each checked against Keras."""
    return [python, str(ROOT / "TensorRT.py"), f"--model={staged_keras}",
            f"--onnx={staged_keras.with_suffix('.onnx')}", f"--data={data}", f"--lists={lists}",
            f"--parity_images={parity_images}", "--fast" if fast else "--no-fast",
            "--cpu_int8" if cpu_int8 else "--no-cpu_int8"]


# ---------------------------------------------------------------------------------------------- hand-over
COMMIT = "COMMIT.json"  # in a staging folder: the one-by-one hand-over was decided; the next run completes it
LOCK = ".lock"          # in a staging folder: held (flock) by the live run that owns it
NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EBUSY, errno.EPERM}
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100  # linux/fs.h, fcntl.h


def exchange(a: Path, b: Path) -> None:
    """Swap the names of two folders in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); OSError
    (``ENOSYS`` where there is no such call) otherwise."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # no such call in this C library, or no C library by that name
        raise OSError(errno.ENOSYS, "renameat2 is not available here", str(a)) from None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def _staging_names(weights_dir: Path) -> tuple[str, str]:
    """Glob patterns of staging folders: beside ``weights_dir`` and inside it (older runs staged there too)."""
    return f".{weights_dir.name}.ship-*", ".ship*"


def _lock(stage: Path) -> IO | None:
    """Hold the staging folder's lock for as long as this run lives (None where there is no flock: Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(stage / LOCK, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _abandoned(stage: Path) -> bool:
    """Whether no live run holds ``stage``'s lock."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        handle = open(stage / LOCK, "r")
    except OSError:
        return True  # killed before it took its lock
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


def _roll_forward(stage: Path, weights_dir: Path) -> list[Path]:
    """Finish a one-by-one hand-over whose commit record is in ``stage``: move what is left, remove what it
    supersedes. Idempotent, so a kill during it is finished by the next run."""
    record = json.loads((stage / COMMIT).read_text())
    source = stage / record["from"]
    moved = []
    for name in record["files"]:  # the cards last: they describe the files
        if (source / name).exists():
            os.replace(source / name, weights_dir / name)
        moved.append(weights_dir / name)
    for name in record["remove"]:
        (weights_dir / name).unlink(missing_ok=True)
    return moved


def sweep(weights_dir: str | Path) -> list[Path]:
    """Remove the staging folders that runs which died left beside (or in) ``weights_dir``, first completing a
    hand-over one had committed to; a live run's folder is left alone. Returns the folders removed."""
    weights_dir = Path(weights_dir).resolve()
    beside, inside = _staging_names(weights_dir)
    found = [p for p in weights_dir.parent.glob(beside) if p.is_dir()]
    found += [p for p in weights_dir.glob(inside) if p.is_dir()] if weights_dir.is_dir() else []
    swept = []
    for stage in found:
        if not _abandoned(stage):
            continue
        if (stage / COMMIT).is_file():
            try:
                _roll_forward(stage, weights_dir)
            except (OSError, ValueError, KeyError) as exc:
                raise ShipError(f"{stage}: cannot complete the hand-over an earlier run committed to ({exc}); "
                                f"move its files into {weights_dir} by hand, then delete it") from None
            print(f"{stage}: completed the hand-over an earlier run was killed in")
        shutil.rmtree(stage, ignore_errors=True)
        swept.append(stage)
    return swept


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # no hard links here (FAT, some network shares)
        shutil.copy2(src, dst, follow_symlinks=False)


def hand_over(stage: Path, source: Path, weights_dir: Path, files: list[str], remove: Iterable[str] = ()) -> list[Path]:
    """Make ``files`` (in ``source``, inside the staging folder ``stage``) the ones in ``weights_dir``, all at once,
    and drop ``remove`` (names in ``weights_dir`` the new set supersedes). Returns the new paths."""
    remove = [n for n in remove if n not in files]
    if stage.parent == weights_dir.parent:  # beside it: build the whole new folder, then swap the two names
        new = stage / "next"
        skip = set(files) | set(remove)
        _, inside = _staging_names(weights_dir)
        shutil.copytree(weights_dir, new, symlinks=True, copy_function=_link_or_copy,
                        ignore=lambda folder, names: [n for n in names if Path(folder) == weights_dir and (
                            n in skip or Path(n).match(inside))])
        for name in files:
            os.replace(source / name, new / name)
        try:
            exchange(new, weights_dir)
            return [weights_dir / name for name in files]
        except OSError as exc:
            if exc.errno not in NO_EXCHANGE:
                raise
            print(f"{weights_dir}: no atomic folder exchange here ({exc.strerror}); renaming file by file")
            source = new
    record = {"from": source.relative_to(stage).as_posix(), "remove": list(remove),
              "files": sorted(files, key=lambda n: (n.endswith(".json"), n))}  # the cards last
    tmp = stage / f"{COMMIT}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, stage / COMMIT)  # from here on the new set is decided: a later run completes it
    return _roll_forward(stage, weights_dir)


def ship(model: str | Path, weights_dir: str | Path = "weights", name: str = "student", *, data: str,
         lists: str, parity_images: int = 8, fast: bool = True, cpu_int8: bool = True, force: bool = False,
         python: str = sys.executable, ablation: dict | None = None) -> dict:
    """Ship ``model`` (checked by ``deployed_model``) into ``weights_dir`` as ``name.keras`` + card + exports.

    Everything is written into a staging folder beside ``weights_dir`` first (inside it where the parent cannot be
    written or ``weights_dir`` is a mount point); the exports run there (``TensorRT.py``, its output streamed);
    only when every check passed is the whole set handed over at once (``hand_over``). Leftovers of a run that was
    killed are swept first (``sweep``). ``ablation``: ``ablation_choice``'s facts, recorded in the card. Returns
    ``{"shipped": [paths], "skipped": bool}``."""
    model = deployed_model(model=model)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights_dir = weights_dir.resolve()  # a symlinked weights/ is handed over where it points
    sweep(weights_dir)
    exports = expected_exports(fast, cpu_int8)
    if not force and already_shipped(model, weights_dir, name, exports):
        print(f"{weights_dir / (name + '.keras')}: already these bytes with {', '.join(exports)}; nothing to do "
              f"(--force ships again)")
        return {"shipped": [], "skipped": True}
    info = card_info(model, ablation)
    print(f"shipping {model} ({len(info['stages'])} stages) -> {weights_dir}/{name}.keras")
    beside = not os.path.ismount(weights_dir) and os.access(weights_dir.parent, os.W_OK | os.X_OK)
    if beside:
        stage = Path(tempfile.mkdtemp(prefix=_staging_names(weights_dir)[0][:-1], dir=weights_dir.parent))
    else:
        stage = Path(tempfile.mkdtemp(prefix=".ship-", dir=weights_dir))
    lock, committed = _lock(stage), False
    try:
        export = stage / "export"
        export.mkdir()
        staged = export / f"{name}.keras"
        shutil.copyfile(model, staged)
        if sha256(staged) != info["shipped"]["sha256"]:
            raise ShipError(f"{staged}: the copy differs from {model}")
        write_card(staged, info)
        command = export_command(staged, data, lists, parity_images, fast, cpu_int8, python)
        print("$ " + " ".join(command), flush=True)
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0:
            raise ShipError(f"the exports of {model} failed their checks (TensorRT.py exit {result.returncode}, "
                            f"see above); nothing in {weights_dir} was changed")
        missing = [fmt for fmt in exports if fmt not in _exports_of(export, name)]
        if missing:
            raise ShipError(f"TensorRT.py wrote no {', '.join(missing)} export; nothing in {weights_dir} was changed")
        files = sorted(p.name for p in export.iterdir() if p.is_file() and not p.name.startswith("."))
        # the older QDQ int8 model: the IR supersedes it (as TensorRT.py does)
        superseded = [f"{name}_int8.onnx"] if "openvino_int8" in exports else []
        stale = [n for n in superseded if (weights_dir / n).is_file()]
        shipped = hand_over(stage, export, weights_dir, files, stale)
    except BaseException:
        committed = (stage / COMMIT).is_file()  # decided but not finished: keep it for the next run to complete
        if committed:
            print(f"{stage}: the hand-over stopped half-way; the next scripts/ship.py run completes it")
        raise
    finally:
        if not committed:
            shutil.rmtree(stage, ignore_errors=True)
        if lock is not None:
            lock.close()
    for removed in stale:
        print(f"removed {weights_dir / removed} (superseded by {name}_int8.xml)")
    for path in shipped:
        print(f"shipped: {path}")
    return {"shipped": [str(p) for p in shipped], "skipped": False}


def _exports_of(folder: Path, name: str) -> set[str]:
    found: set[str] = set()
    for card in folder.glob(f"{name}*.json"):
        try:
            found |= set(json.loads(card.read_text()).get("exports", {}))
        except (OSError, ValueError):
            pass
    return found
