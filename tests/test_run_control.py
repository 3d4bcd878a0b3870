"""Run control of the shared training loop: time limit, weights-only best checkpoint, finished runs without
last.keras."""
from __future__ import annotations

import io
import json
import time
import zipfile

import h5py
import numpy as np
import pytest

from crackseg.training import TimeLimit, TrainingError, fit, parse_floors, save_without_optimizer


class _FakeModel:
    stop_training = False


@pytest.mark.parametrize("minutes, stops", [(0.0005, True), (0, False), (60, False)])
def test_time_limit_stops_only_after_its_minutes(minutes, stops):
    limit = TimeLimit(minutes)
    limit.set_model(_FakeModel())
    limit.on_train_begin()
    time.sleep(0.05)  # 0.0005 min = 0.03 s
    limit.on_epoch_end(0)
    assert limit.model.stop_training is stops


def _tiny_trained_model():
    import keras

    from model import HEADS, build_model

    net = build_model("student", 32, width=4, blocks=1)
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss={h: "categorical_crossentropy" for h in HEADS})
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    y = np.zeros((2, 32, 32, 2), np.float32)
    y[..., 0] = 1.0
    net.train_on_batch(x, {h: y for h in HEADS})
    return net, x


def test_best_checkpoint_has_weights_but_no_optimizer(tmp_path):
    from crackseg.train_steps import load_keras_model

    net, x = _tiny_trained_model()
    path = tmp_path / "best.keras"
    save_without_optimizer(net, path)
    with zipfile.ZipFile(path) as archive:
        groups = list(h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r").keys())
    assert "optimizer" not in groups and "layers" in groups
    net.save(tmp_path / "last.keras")
    with zipfile.ZipFile(tmp_path / "last.keras") as archive:
        assert "optimizer" in h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    loaded = load_keras_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["mix"], net.predict(x, verbose=0)["mix"], atol=1e-6)
    assert not list(tmp_path.glob("*.tmp*"))


def _finished_run(run, epoch: int) -> None:
    run.mkdir()
    state = {"epoch": epoch, "best": 0.5, "monitor": "val_mix_f1", "history": [], "callbacks": [{}, {}]}
    (run / "state.json").write_text(json.dumps(state))


def test_a_finished_run_needs_no_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    _finished_run(run, 3)

    def build():
        raise AssertionError("a finished run must not build or load a model")

    state = fit(build, None, None, run, {"preset": "student"}, epochs=3)
    assert state["epoch"] == 3


def test_resuming_without_last_checkpoint_is_one_clear_error(tmp_path):
    run = tmp_path / "run"
    _finished_run(run, 1)
    from crackseg.training import TrainingError

    with pytest.raises(TrainingError, match="last.keras: missing, cannot resume after epoch 1"):
        fit(lambda: None, None, None, run, {"preset": "student"}, epochs=3)


def test_resume_continues_the_augmentation_stream(tmp_path):
    """A run resumed after epoch 1 draws epoch 2's shuffle and crops, not epoch 1's again."""
    from model import HEADS

    from crackseg.inputs import eval_dataset, train_dataset

    net, _ = _tiny_trained_model()
    run = tmp_path / "run"
    _finished_run(run, 1)
    net.save(run / "last.keras")
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    masks = [rng.uniform(size=(32, 32)) > 0.8 for _ in range(4)]
    heads = lambda x, y: (x, {h: y for h in HEADS})  # noqa: E731
    train = train_dataset(images, masks, crop=32, batch_size=2, targets=heads)
    state = fit(lambda: None, train, eval_dataset(images[:1], masks[:1], targets=heads), run, {"preset": "student"},
                epochs=2, monitor="val_loss", verbose=0)
    assert state["epoch"] == 2
    assert train.epoch == 1  # the second epoch (index 1) ran, not the first again


def test_choose_threshold_reports_at_the_ods_threshold_of_the_sweep():
    """The card's threshold is the dataset-best (ODS) one, and the report is measured at it."""
    import keras

    from crackseg.metrics import evaluate_arrays
    from crackseg.keras_io import predict_probabilities
    from crackseg.train_steps import choose_threshold
    from model import build_model, deploy_model

    keras.utils.set_random_seed(1)
    deployed = deploy_model(build_model("student", None, width=4, blocks=1))
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    masks = [rng.random((24, 40)) < 0.3 for _ in range(3)]
    report = choose_threshold(deployed, images, masks, distance=1)
    assert report["threshold"] == report["ods_threshold"]
    assert report["strict"]["f1"] == pytest.approx(report["ods_f1"])
    probs = predict_probabilities(deployed, images)
    # no fixed threshold does better than the chosen one
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.9):
        assert evaluate_arrays(probs, masks, threshold, 1)["strict"]["f1"] <= report["strict"]["f1"] + 1e-9


def test_init_from_a_model_of_another_architecture_is_one_line(tiny_model):
    from crackseg.train_steps import warm_start
    from model import build_model

    from crackseg.training import TrainingError

    with pytest.raises(TrainingError, match=r"^--init=.*tiny\.keras: layer .* do not fit"):
        warm_start(build_model("student", None, width=8, blocks=1), str(tiny_model["keras"]))
    with pytest.raises(TrainingError, match=r"^.*nothing\.keras: model file not found"):
        warm_start(build_model("student", None, width=4, blocks=1), str(tiny_model["keras"].parent / "nothing.keras"))


def test_initial_weights_hash_is_taken_when_the_run_starts_and_kept_on_resume(tmp_path):
    """A card names the exact bytes a fine-tune started from, even if --deploy later overwrote that file."""
    from crackseg.io import atomic_write_json, sha256
    from crackseg.train_steps import recipe_facts, with_initial_weights

    start = tmp_path / "student.keras"
    start.write_bytes(b"weights of the first launch")
    run = tmp_path / "run"
    config = {"out": str(run), "init": str(start), "optimizer": "adam", "lr": 1e-4, "batch_size": 4, "crop": 256,
              "dilate": 0}
    first = with_initial_weights(config)
    assert recipe_facts(first)["initial_weights"] == {"path": str(start), "sha256": sha256(start)}
    run.mkdir()
    atomic_write_json(run / "config.json", first)
    atomic_write_json(run / "state.json", {"epoch": 1})
    start.write_bytes(b"a deploy step overwrote it")
    resumed = with_initial_weights({**config, "init": ""})  # a resume keeps the run's own start, whatever --init says
    assert recipe_facts(resumed)["initial_weights"] == recipe_facts(first)["initial_weights"]
    assert recipe_facts(with_initial_weights({**config, "out": str(tmp_path / "new"), "init": ""})
                        )["initial_weights"] is None


def test_resume_sweeps_partial_files_of_an_interrupted_save(tmp_path):
    """A SIGKILL during an atomic save leaves '.last.<random>.keras'; starting or resuming the run removes it, and
    nothing else."""
    from crackseg.training import prepare_run

    run = tmp_path / "run"
    run.mkdir()
    stale = [run / ".last.k3j9x.keras", run / ".state.a1b2.json", run / ".best.zz.keras"]
    for path in stale:
        path.write_bytes(b"half")
    (run / "notes.txt").write_text("mine")
    (run / ".lastingimpression").write_text("not ours")
    prepare_run(run, {"preset": "student"})
    assert not any(p.exists() for p in stale)
    assert (run / "notes.txt").is_file() and (run / ".lastingimpression").is_file() and (run / "config.json").is_file()


def test_balanced_validation_logs_the_card_rule_for_checkpoint_choice():
    """The in-training validation scores the head by the same rule as the card: per-dataset F1 over the sweep, the
    threshold with the best mean, and logs it for the callbacks after it."""
    import keras

    from crackseg.metrics import balanced_threshold, dataset_curves
    from crackseg.training import BalancedValidation, predict_probabilities
    from model import HEADS, build_model

    keras.utils.set_random_seed(2)
    net = build_model("student", None, width=4, blocks=1)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    images += [rng.integers(0, 256, (32, 20, 3), dtype=np.uint8) for _ in range(2)]
    masks = [rng.random(im.shape[:2]) < 0.3 for im in images]
    names = ["a", "a", "a", "b", "b"]
    validator = BalancedValidation(images, masks, names, "mix")
    validator.set_model(net)
    logs: dict = {}
    validator.on_epoch_end(0, logs)
    probs = predict_probabilities(net, images, "mix")
    assert [p.shape for p in probs] == [im.shape[:2] for im in images]
    mix = [keras.ops.convert_to_numpy(net(prepare_one(im), training=False)["mix"]) for im in images]
    one_by_one = [m[0, :im.shape[0], :im.shape[1], 1] for m, im in zip(mix, images)]
    for got, want in zip(probs, one_by_one):
        np.testing.assert_allclose(got, want, atol=1e-5)  # batched by size = one at a time
    expected = balanced_threshold(dataset_curves(probs, masks, names))
    assert logs["val_score"] == pytest.approx(expected["mean_f1"])
    assert logs["val_threshold"] == expected["threshold"]
    assert logs["val_f1_a"] == pytest.approx(expected["by_dataset"]["a"]["f1"])
    assert set(HEADS) >= {"mix"}
    assert logs["val_mean_f1"] == pytest.approx(expected["mean_f1"])

    # a floor under the dataset's F1 there changes nothing; one no threshold reaches ranks the epoch under any
    # epoch that keeps it
    kept, missed = {}, {}
    f1_a = expected["by_dataset"]["a"]["f1"]
    for floors, out in (({"a": f1_a - 0.01}, kept), ({"a": min(1.0, expected["by_dataset"]["a"]["best_f1"] + 0.01)},
                                                     missed)):
        guarded = BalancedValidation(images, masks, names, "mix", floors)
        guarded.set_model(net)
        guarded.on_epoch_end(0, out)
    assert kept["val_score"] == pytest.approx(expected["mean_f1"])
    assert missed["val_score"] == pytest.approx(expected["mean_f1"] - 1.0)
    assert missed["val_mean_f1"] == pytest.approx(expected["mean_f1"])
    assert missed["val_threshold"] == expected["threshold"]
    with pytest.raises(TrainingError, match="no validation images of c"):
        BalancedValidation(images, masks, names, "mix", {"c": 0.5})


@pytest.mark.parametrize("text, floors", [("", {}), ("DeepCrack=0.80", {"DeepCrack": 0.8}),
                                          (" A=0.5, B=1 ", {"A": 0.5, "B": 1.0})])
def test_parse_floors(text, floors):
    assert parse_floors(text) == floors


@pytest.mark.parametrize("text", ["DeepCrack", "DeepCrack=high", "DeepCrack=1.5", "=0.5", "DeepCrack=-0.1"])
def test_parse_floors_refuses_bad_text_in_one_line(text):
    with pytest.raises(TrainingError, match="--floor"):
        parse_floors(text)


def test_fine_tuning_at_another_temperature_warns(tmp_path, capsys):
    from crackseg.card import write_card
    from crackseg.train_steps import init_temperature, warn_temperature_change

    deployed = tmp_path / "student.keras"
    deployed.write_bytes(b"weights")
    write_card(deployed, {"t2": 10.0})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"t2": 1.0}))
    assert init_temperature(deployed) == 10.0 and init_temperature(run / "best.keras") == 1.0
    assert init_temperature(tmp_path / "other.keras") is None
    warn_temperature_change(str(deployed), 10.0)
    warn_temperature_change("", 1.0)
    assert capsys.readouterr().out == ""
    warn_temperature_change(str(deployed), 1.0)
    line = capsys.readouterr().out.strip()
    assert line.startswith("warning: --init=") and "T2=10" in line and "--t2=10" in line and "\n" not in line


def test_fine_tuning_without_a_teacher_on_the_auxiliary_heads_warns(capsys):
    from crackseg.train_steps import describe_loss_weights, warn_auxiliary_fine_tune

    # kd_losses: alpha * T1^2 / 4 on each soft head, 1 - alpha on real
    assert describe_loss_weights(0.9, 10.0) == "loss weights: h, x, y, mix 22.5 each, real 0.1"
    assert describe_loss_weights(0.9, 10.0, t1_squared=False) == "loss weights: h, x, y, mix 0.225 each, real 0.1"
    assert describe_loss_weights(0.0, 10.0) == "loss weights: h, x, y, mix 0 each, real 1"
    for init, distill, alpha in (("student.keras", False, 0.0), ("", False, 0.9), ("student.keras", True, 0.9)):
        warn_auxiliary_fine_tune(init, distill, alpha)  # alpha 0, no --init, or a teacher: nothing to say
    assert capsys.readouterr().out == ""
    warn_auxiliary_fine_tune("student.keras", False, 0.9)
    line = capsys.readouterr().out.strip()
    assert line.startswith("warning: fine-tuning student.keras") and "--alpha=0" in line and "\n" not in line


def prepare_one(image):
    from crackseg.preprocess import prepare

    return prepare(image)[0]
