"""benchmark.py / crackseg.bench and the fast CPU path (clean export + OpenVINO). No timing assertions: speed is
measured by benchmark.py and reported in README.md (Inference speed), never asserted."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from conftest import CPU_KINDS, REPO
from crackseg.bench import ROW_KEYS
from crackseg.engines import OnnxEngine, OpenVinoEngine, choose_backend, fast_onnx_for, open_engine


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """A tiny student with non-trivial instance-norm gamma / beta, exported plain and clean."""
    import model as mcff
    from crackseg.export import export_onnx

    folder = tmp_path_factory.mktemp("fast_export")
    net = mcff.deploy_model(mcff.build_model("student", None, width=4, blocks=1))
    rng = np.random.default_rng(0)
    norms = [layer for layer in net.layers if type(layer).__name__ == "InstanceNorm"]
    for layer in norms:  # gamma = 1 / beta = 0 would let tf2onnx fold them away: test the general pattern
        channels = layer.gamma.shape[0]
        layer.set_weights([1 + 0.3 * rng.standard_normal(channels), 0.2 * rng.standard_normal(channels)])
    plain = export_onnx(net, folder / "tiny.onnx")
    clean = export_onnx(net, fast_onnx_for(plain), clean=True)
    return {"net": net, "plain": plain, "clean": clean, "norms": len(norms)}


def test_clean_export_has_native_instance_norm_and_fewer_nodes(exports):
    import onnx

    plain = Counter(n.op_type for n in onnx.load(str(exports["plain"])).graph.node)
    clean = Counter(n.op_type for n in onnx.load(str(exports["clean"])).graph.node)
    assert clean["InstanceNormalization"] == exports["norms"]
    assert clean["GlobalAveragePool"] == 0 and clean["Reciprocal"] == 0
    assert clean["SpaceToDepth"] == clean["DepthToSpace"] == 0  # dilated convs are native Conv
    assert clean["Transpose"] < plain["Transpose"]
    assert sum(clean.values()) < sum(plain.values())


def test_fast_path_matches_onnxruntime_fp32(exports):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (48, 64, 3), np.uint8), rng.integers(0, 256, (37, 50, 3), np.uint8)]
    reference = OnnxEngine(str(exports["plain"]))
    fast = OpenVinoEngine(str(exports["plain"]))  # picks tiny_fast.onnx beside it
    assert fast.onnx_path == exports["clean"]
    for image in images:
        expected = reference.predict(image)
        np.testing.assert_allclose(fast.predict(image), expected, atol=1e-4)
        np.testing.assert_allclose(OnnxEngine(str(exports["clean"])).predict(image), expected, atol=1e-4)
        keras_prob = exports["net"](reference_batch(image)).numpy()[0, :image.shape[0], :image.shape[1], 0]
        np.testing.assert_allclose(fast.predict(image), keras_prob, atol=1e-4)


def reference_batch(image: np.ndarray) -> np.ndarray:
    from crackseg.preprocess import prepare

    return prepare(image)[0]


def test_openvino_is_the_cpu_default_and_falls_back_to_the_plain_file(tiny_model, tmp_path):
    assert choose_backend(str(tiny_model["onnx"])) == "openvino"
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_model["onnx"], bare)
    engine = open_engine(str(bare))
    assert engine.backend == "openvino" and engine.onnx_path == bare  # no bare_fast.onnx: the file itself
    image = np.random.default_rng(2).integers(0, 256, (40, 44, 3), np.uint8)
    np.testing.assert_allclose(engine.predict(image), open_engine(str(bare), "onnx").predict(image), atol=1e-4)


def test_benchmark_writes_rows_with_the_right_keys(tmp_path):
    out = tmp_path / "bench.json"
    argv = [sys.executable, "benchmark.py", "--size=64", "--runs=2", "--warmup=1", "--width=4", "--blocks=1",
            "--images=2", "--camera_frames=2", "--train_crop=64", "--train_batch=2", "--train_steps=1",
            f"--data={tmp_path / 'no_data'}", "--skip=keras:bf16,onnxruntime:fp32:fast,openvino:fp32:plain",
            f"--json={out}"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {(r["backend"], r["precision"], r["graph"]): r for r in report["rows"]}
    assert {("keras", "fp32", "keras"), ("onnxruntime", "fp32", "plain"), ("onnxruntime", "int8", "qdq"),
            ("openvino", "fp32", "fast"), ("openvino", "int8", "qdq"), ("openvino", "int8", "full")} <= set(rows)
    assert ("keras", "bf16", "keras") not in rows and ("openvino", "fp32", "plain") not in rows  # --skip
    for row in rows.values():
        assert set(ROW_KEYS) <= set(row)
        assert row["images_per_s"] > 0 and row["latency_ms"] > 0 and row["ratio_vs_keras_fp32"] > 0
        assert 0 <= row["mask_agreement_pct"] <= 100 and row["f1_delta"] is not None
        # effective GFLOP/s from the model's FLOPs, and its share of the peak measured in the row's precision
        assert row["gflops_per_s"] == pytest.approx(report["gflop_per_image"] * row["images_per_s"])
        assert row["pct_of_peak"] == pytest.approx(100 * row["gflops_per_s"] / report["peaks"][row["precision"]]
                                                   ["gflops"])
    assert set(report["peaks"]) >= {"fp32", "int8"} and all(p["gflops"] > 0 for p in report["peaks"].values())
    assert rows[("keras", "fp32", "keras")]["ratio_vs_keras_fp32"] == 1.0
    assert rows[("keras", "fp32", "keras")]["f1_delta"] == 0.0
    assert rows[("openvino", "fp32", "fast")]["mask_agreement_pct"] > 99.0
    assert report["auto"]["reason"].startswith("auto: ") and "machine: " in done.stdout and " cores, flags: " in \
        done.stdout
    assert report["camera"]["backend"] == "openvino" and report["camera"]["pipeline_overlapped_fps"] > 0
    assert report["training"]["model_only_images_per_s"] > 0 and report["training"]["fit_images_per_s"] > 0
    assert "synthetic" in report["images"]
    assert "backend" in done.stdout and "images/s" in done.stdout


def test_rounds_time_every_row_again_interleaved_and_close_the_engines(tiny_model, monkeypatch, cpu_kind):
    from crackseg import bench

    opened, timed = [], []
    real_time_predict = bench.time_predict

    def time_predict(engine, image, runs, warmup):  # records which engine each timing call ran
        if engine not in opened:
            opened.append(engine)
        timed.append(opened.index(engine))
        return real_time_predict(engine, image, runs, warmup)

    monkeypatch.setattr(bench, "time_predict", time_predict)
    images = [np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    masks = [np.zeros((32, 32), bool)]
    log = []
    rows = bench.backend_rows(str(tiny_model["keras"]), images, masks, runs=2, warmup=1, log=log.append,
                              skip=("onnxruntime", "openvino:int8", "openvino:fp32:plain", "keras:bf16", "tensorrt"),
                              rounds=3)
    # OpenVINO's bf16 row exists where the CPU has bf16 (AVX-512 BF16, AMX)
    bf16 = [("openvino", "bf16", "fast")] if "BF16" in CPU_KINDS[cpu_kind][1] else []
    assert [(r["backend"], r["precision"], r["graph"]) for r in rows] == [("keras", "fp32", "keras"),
                                                                          ("openvino", "fp32", "fast"), *bf16]
    assert all(r["runs"] == 6 and r["latency_ms"] >= r["latency_min_ms"] > 0 for r in rows)  # 2 calls x 3 rounds
    order = list(range(len(rows)))
    assert timed == order + order[::-1] + order  # round 1 in order, round 2 reversed, round 3 in order again
    assert "round 3 of 3 ..." in log
    assert all(isinstance(e, OpenVinoEngine) and e.model is None for e in opened[1:])  # closed afterwards
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        bench.backend_rows(str(tiny_model["keras"]), images, masks, runs=1, warmup=0, rounds=0)


def test_a_row_that_fails_closes_its_engine():
    from crackseg import bench
    from crackseg.engines import Engine, EngineError

    closed = []

    class Broken(Engine):
        def _infer(self, batch):
            raise EngineError("broken.onnx: the runtime gave up")

        def close(self):
            closed.append(self.name)

    candidate = bench.Candidate("openvino", "int8", lambda: Broken("broken", 0.5), graph="full")
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(EngineError, match="broken.onnx"):
        bench.measure(candidate, [image], [np.zeros((16, 16), bool)], runs=1, warmup=0, reference_masks=None)
    assert closed == ["broken"]


def test_a_several_model_run_compares_what_auto_runs_on_each():
    from crackseg import bench

    def row(backend, precision, graph, ips, f1, default=False):
        return {"backend": backend, "precision": precision, "graph": graph, "images_per_s": ips, "f1": f1,
                **({"default": "default (--precision=auto)"} if default else {})}

    models = {"weights/student.keras": {"gflop_per_image": 44.6, "rows": [
                  row("keras", "fp32", "keras", 2.0, 0.70), row("openvino", "int8", "full", 10.0, 0.71, True)]},
              "weights/teacher.keras": {"gflop_per_image": 13.7, "rows": [
                  row("keras", "fp32", "keras", 4.0, 0.80)]}}  # no auto row: its Keras fp32 stands in
    lines = bench.format_model_comparison(models).splitlines()
    assert len(lines) == 3 and lines[0].split()[:2] == ["model", "row"]
    student, teacher = lines[1].split(), lines[2].split()
    assert student[:4] == ["weights/student.keras", "openvino", "int8", "full"]
    assert student[4:8] == ["10.000", "1.00x", "0.7100", "44.60"]
    assert teacher[:3] == ["weights/teacher.keras", "keras", "fp32"] and teacher[-4:] == ["4.000", "0.40x", "0.8000",
                                                                                        "13.70"]
    assert bench.format_model_comparison({"a": {"rows": []}}) == "models: no row measured"
