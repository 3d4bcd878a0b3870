"""Shipping a trained student: checks, the stage history of its card, and the atomic hand-over into ``weights/``.

``scripts/ship.py`` is the command; this module is what it does (no TensorFlow here: the exports run as
``TensorRT.py`` in a subprocess, the one export path):

1. ``deployed_model``: the deployable ``.keras`` of a run (``--run``) or the file itself (``--model``), refused in one
   line unless its run is finished (every epoch, or early stopping) and its card (written by Train_3 beside it)
   records the very bytes of the file;
2. ``stage_history``: every stage that led to it, oldest first, read from the run folders (``config.json``,
   ``state.json``) and the cards beside each stage's deployable file, followed through ``initial_weights``;
3. ``ship``: copies the model and writes its card (every field from code) into a staging folder inside
   ``weights/``, runs ``TensorRT.py`` there (ONNX, fast, int8, each parity-checked against Keras), and only when all
   of that passed renames the files over the shipped ones. A failed check leaves ``weights/`` as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def ship(model: str | Path, weights_dir: str | Path = "weights", name: str = "student", *, data: str,
         lists: str, parity_images: int = 8, fast: bool = True, cpu_int8: bool = True, force: bool = False,
         python: str = sys.executable, ablation: dict | None = None) -> dict:
    """Ship ``model`` (checked by ``deployed_model``) into ``weights_dir`` as ``name.keras`` + card + exports.

    Everything is written into a staging folder inside ``weights_dir`` first; the exports run there
    (``TensorRT.py``, its output streamed); only when every check passed are the files renamed into place (each
    rename atomic). ``ablation``: ``ablation_choice``'s facts, recorded in the card. Returns
    ``{"shipped": [paths], "skipped": bool}``."""
    model = deployed_model(model=model)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    exports = expected_exports(fast, cpu_int8)
    if not force and already_shipped(model, weights_dir, name, exports):
        print(f"{weights_dir / (name + '.keras')}: already these bytes with {', '.join(exports)}; nothing to do "
              f"(--force ships again)")
        return {"shipped": [], "skipped": True}
    info = card_info(model, ablation)
    print(f"shipping {model} ({len(info['stages'])} stages) -> {weights_dir}/{name}.keras")
    stage = Path(tempfile.mkdtemp(prefix=f".ship.{name}.", dir=weights_dir))
    try:
        staged = stage / f"{name}.keras"
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
        missing = [fmt for fmt in exports if fmt not in _exports_of(stage, name)]
        if missing:
            raise ShipError(f"TensorRT.py wrote no {', '.join(missing)} export; nothing in {weights_dir} was changed")
        files = sorted(p for p in stage.iterdir() if p.is_file() and not p.name.startswith("."))
        cards = [p for p in files if p.suffix == ".json"]
        shipped = []
        for path in [p for p in files if p not in cards] + cards:  # the cards last: they describe the files
            os.replace(path, weights_dir / path.name)
            shipped.append(weights_dir / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if "openvino_int8" in exports:
        stale = weights_dir / f"{name}_int8.onnx"  # the older QDQ int8 model: the IR supersedes it (as TensorRT.py)
        if stale.is_file():
            stale.unlink()
            print(f"removed {stale} (superseded by {name}_int8.xml)")
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
