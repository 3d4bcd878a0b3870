"""Model cards: a JSON file beside each deployable model, ``weights/student.keras`` <-> ``weights/student.json``.

The card says what the file is (sha256, params, FLOPs, preset), how it was made (data, splits, strategy, T0/T1/T2,
alpha) and how to use it (the threshold chosen by ODS F1 on validation, and the validation metrics there).
No TensorFlow here: the edge side reads cards too.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .io import atomic_write_json, sha256


class CardError(ValueError):
    """A missing, unreadable or mismatched model card; the message names the file."""


def card_path(model_path: str | Path) -> Path:
    """``<stem>.json`` beside the model file."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.json")


def write_card(model_path: str | Path, info: dict) -> Path:
    """Write the card of ``model_path`` atomically: ``info`` plus the file's name, sha256 and the creation time."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise CardError(f"{model_path}: model file not found; write the model before its card")
    card = {"model": model_path.name, "sha256": sha256(model_path), **info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = card_path(model_path)
    atomic_write_json(path, card)
    return path


def recorded_sha256(card: dict, file_name: str) -> list[str]:
    """Every sha256 a card records for ``file_name``: the top-level one when it is the card's ``model`` (the .keras
    file), and that of each ``exports`` entry whose ``file`` it is (.onnx, _fast.onnx, .engine; see
    ``write_export_card``)."""
    entries = [(card.get("model"), card.get("sha256"))]
    exports = card.get("exports")
    if isinstance(exports, dict):
        entries += [(entry.get("file"), entry.get("sha256")) for entry in exports.values() if isinstance(entry, dict)]
    return [digest for name, digest in entries if name == file_name and digest]


_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, size, mtime_ns) -> sha256
_DIGESTS_LOCK = threading.Lock()
MAX_DIGESTS = 256


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, remembered while its device, inode, size and modification time (ns) stay the same:
    opening a model again (every engine checks its file against its card) costs one ``stat``, not a read. A file
    replaced (new inode) or rewritten (new mtime) is hashed again."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _DIGESTS_LOCK:
        digest = _DIGESTS.get(key)
    if digest is None:
        digest = sha256(path)
        with _DIGESTS_LOCK:
            if len(_DIGESTS) >= MAX_DIGESTS:
                _DIGESTS.clear()
            _DIGESTS[key] = digest
    return digest


def _all_sha256(card: dict) -> set[str]:
    """Every file hash a card records (its model's and each export's)."""
    exports = card.get("exports")
    found = {card.get("sha256")} | ({entry.get("sha256") for entry in exports.values() if isinstance(entry, dict)}
                                    if isinstance(exports, dict) else set())
    return {digest for digest in found if isinstance(digest, str) and digest}


def check_model_file(model_path: str | Path, card: dict) -> None:
    """CardError (one line) unless ``card`` (the card beside ``model_path``) vouches for that very file: the sha256
    it records for the file's name (and for an OpenVINO IR's ``.bin``, its ``bin_sha256``) is the file's own. A
    card that records hashes but none for this name vouches only for those bytes (a copy under another name is
    fine); any other file is refused (a stale ``student.onnx`` beside the card of a newer ``student.keras``). A card
    recording no hash at all (written by hand, only a threshold) vouches for nothing and refuses nothing."""
    path, name = Path(model_path), Path(model_path).name
    recorded = recorded_sha256(card, name)
    if not recorded:
        known = _all_sha256(card)
        if known and (not path.is_file() or file_sha256(path) not in known):
            raise CardError(f"{card_path(path)}: describes {card.get('model', 'another file')} but records no sha256 "
                            f"for {name} (left from an earlier model?); re-export it with TensorRT.py")
        return
    if not path.is_file():
        raise CardError(f"{path}: model file not found")
    if any(digest != file_sha256(path) for digest in recorded):
        raise CardError(f"{card_path(path)}: sha256 does not match {name} (the file changed after its card was "
                        f"written, or was left from an earlier model); re-export it with TensorRT.py")
    exports = card.get("exports")
    for entry in exports.values() if isinstance(exports, dict) else ():
        if isinstance(entry, dict) and entry.get("file") == name and entry.get("bin_sha256"):
            weights = path.with_suffix(".bin")
            if not weights.is_file() or file_sha256(weights) != entry["bin_sha256"]:
                raise CardError(f"{card_path(path)}: sha256 does not match {weights.name} (the weights of {name}); "
                                f"re-export it with TensorRT.py")


def read_card(model_path: str | Path, verify: bool = False) -> dict:
    """The card beside ``model_path``; with ``verify`` also check the sha256 the card records for that very file."""
    path = card_path(model_path)
    if not path.is_file():
        raise CardError(f"{path}: no model card beside {Path(model_path).name}")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CardError(f"{path}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise CardError(f"{path}: a model card is a JSON object")
    if verify:
        name = Path(model_path).name
        recorded = recorded_sha256(card, name)
        if not recorded:
            raise CardError(f"{path}: records no sha256 for {name} (neither its 'model' nor an 'exports' entry)")
        if not Path(model_path).is_file():
            raise CardError(f"{model_path}: model file not found")
        actual = file_sha256(model_path)
        if any(digest != actual for digest in recorded):
            raise CardError(f"{path}: sha256 does not match {name} (the file changed after its card was written)")
    return card


def model_facts(model, input_size: int = 448) -> dict:
    """Parameters and GFLOPs (TensorFlow's profiler, batch 1, ``input_size`` square) of a Keras model; GFLOPs are
    None where TensorFlow is not installed (training on a JAX or PyTorch GPU machine): TensorRT.py fills them in."""
    from model.profile import can_count_flops, count_flops

    gflops = round(count_flops(model, input_size) / 1e9, 3) if can_count_flops() else None
    return {"params": int(model.count_params()), "gflops": gflops, "flops_input_size": input_size}


def complete_card_facts(model_path: str | Path, net) -> bool:
    """Fill in the GFLOPs of a .keras model's card written where TensorFlow was missing (Train_3 on a JAX or PyTorch
    GPU machine; see ``crackseg.card.model_facts``). The model file is unchanged, so its sha256 stays valid.
    Returns whether the card changed."""
    dest = card_path(model_path)
    if not dest.is_file():
        return False
    card = read_card(model_path)
    if card.get("gflops") is not None:
        return False
    card.update(model_facts(net, int(card.get("flops_input_size", 448))))
    atomic_write_json(dest, card)
    return True


def write_export_card(source: str | Path | None, out_path: str | Path, fmt: str, info: dict) -> Path:
    """Model card beside ``out_path`` with ``exports[fmt] = info`` added: the destination's card when it describes
    the source's model (``student.keras`` and ``student.onnx`` share one), else a copy of the source's card.

    A card left beside ``out_path`` by an earlier model (another top-level sha256) is replaced, not extended: after
    retraining, a re-export must not keep the old model's threshold and validation metrics (student_fast.json)."""
    dest = card_path(out_path)
    card = read_card(out_path) if dest.is_file() else {}
    source_card = read_card(source) if source and card_path(source).is_file() else {}
    if source_card and card.get("sha256") != source_card.get("sha256"):
        card = source_card
    if "threshold" not in card and "threshold" in source_card:
        card["threshold"] = source_card["threshold"]
    entry = {"file": Path(out_path).name, "sha256": sha256(out_path)}
    weights = Path(out_path).with_suffix(".bin")
    if Path(out_path).suffix.lower() == ".xml" and weights.is_file():  # an OpenVINO IR is two files
        entry["bin_sha256"] = sha256(weights)
    card.setdefault("exports", {})[fmt] = {**entry, **info}
    atomic_write_json(dest, card)
    return dest


def drop_export(out_path: str | Path, fmt: str) -> bool:
    """Remove the ``exports[fmt]`` entry from the card beside ``out_path`` (a superseded export whose file is gone);
    returns whether the card changed."""
    dest = card_path(out_path)
    if not dest.is_file():
        return False
    card = read_card(out_path)
    if fmt not in card.get("exports", {}):
        return False
    del card["exports"][fmt]
    atomic_write_json(dest, card)
    return True
