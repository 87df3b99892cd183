"""TFLite (every quantization) and ONNX export: builtin ops only, verified parity, clean failures."""

import functools
import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.cli import main
from keras_evit.export import ExportError, export_model, non_builtin_ops
from keras_evit.export.images import load_folder
from keras_evit.export.tflite import op_names, xnnpack_partitions

from conftest import outputs, randomize, require


# the tests of the module's M0 run on one worker: they share its SavedModel (traced and saved once)
ON_ONE_WORKER = pytest.mark.xdist_group("export_m0")


@pytest.fixture(scope="module")
def m0():
    return randomize(ke.EfficientViTM0(weights=None, classifier_activation=None))


@pytest.fixture(scope="module")
def images(sample_dir):
    return load_folder(sample_dir, 224, limit=24)[0]


@ON_ONE_WORKER
@pytest.mark.parametrize("quantize", ["none", "fp16", pytest.param("dynamic", marks=pytest.mark.slow),
                                      pytest.param("int8", marks=pytest.mark.slow), "int8-mixed"])
def test_tflite_builtin_ops_and_parity(m0, images, tmp_path, quantize):
    out = str(tmp_path / f"m0_{quantize}.tflite")
    report = export_model(m0, out, "tflite", quantize, calibration_images=images, verify_images=images)
    assert os.path.isfile(out) and report["non_builtin_ops"] == [] and non_builtin_ops(out) == []
    assert report["gpu_delegate_compatible"] is True
    ops = op_names(out)  # raw pixels go straight into the stem conv: the normalization is folded into it
    assert not {"MUL", "SUB", "DIV"} & set(ops[:ops.index("CONV_2D")]), ops[:12]
    if quantize in ("none", "fp16", "int8-mixed"):  # XNNPACK takes the whole graph: no op left behind
        assert xnnpack_partitions(out) == (1, [])
    v = report["verification"]
    assert np.abs(outputs(m0, images[:4])).max() > 0.5  # logits are not trivially ~0
    if quantize == "none":
        assert v["passed"] and v["max_abs_diff"] <= 1e-4
    elif quantize == "fp16":
        assert v["passed"] and v["max_rel_diff"] <= 1e-2
    else:
        print(f"{quantize}: cosine {v['cosine_mean']:.4f}, top-1 agreement {v['top1_agreement']:.2%}")
        assert v["cosine_mean"] > 0.9 and v["passed"] is None


@ON_ONE_WORKER
def test_int8_io_and_fixed_batch(m0, images, tmp_path):
    from keras_evit.export import TFLiteRunner

    out = str(tmp_path / "m0_int8io_b4.tflite")
    report = export_model(m0, out, "tflite", "int8", calibration_images=images[:8], batch_size=4, int8_io=True,
                          verify_images=images[:8])
    runner = TFLiteRunner(out)
    assert runner.input["dtype"] == np.uint8 and runner.batch_size == 4  # what MediaPipe takes
    assert report["verification"]["cosine_mean"] > 0.9


def test_one_saved_model_serves_every_mode_until_the_weights_change(tmp_path, monkeypatch):
    """Exporting one model in several modes folds, traces and saves it once; changed weights make a new
    SavedModel, and the file then computes with the new weights."""
    import keras_evit.export.tflite as tflite
    from keras_evit.export.runners import TFLiteRunner

    import keras

    # the cache knows a model by identity and weights, not by architecture: a small one converts in seconds
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(
        keras.layers.Conv2D(8, 3)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(features))
    saves = []
    real = tflite._saved_model
    monkeypatch.setattr(tflite, "_saved_model", lambda *a: saves.append(a[1]) or real(*a))
    x = np.random.RandomState(0).uniform(0, 255, (1, 16, 16, 3)).astype(np.float32)
    first = tflite.to_tflite(model, str(tmp_path / "a.tflite"))
    tflite.to_tflite(model, str(tmp_path / "b.tflite"), "fp16")
    assert saves == [1]
    tflite.to_tflite(model, str(tmp_path / "c.tflite"), batch_size=2)
    assert saves == [1, 2]
    head = model.get_layer("head")
    head.bias.assign(head.bias.numpy() + 1.0)
    changed = tflite.to_tflite(model, str(tmp_path / "d.tflite"))
    assert saves == [1, 2, 1]
    # unseeded weights on 0..255 pixels give logits up to a few hundred: float32 rounding is relative there
    np.testing.assert_allclose(TFLiteRunner(changed)(x), TFLiteRunner(first)(x) + 1.0, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(TFLiteRunner(changed)(x), outputs(model, x), rtol=1e-5, atol=1e-4)


def _op_input_types(path):
    from ai_edge_litert.interpreter import Interpreter

    from keras_evit.compat import tflite_ops

    it = Interpreter(model_path=path)
    dtypes = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    return [(op["op_name"], dtypes[op["inputs"][0]]) for op in tflite_ops(it)
            if len(op["inputs"]) and op["op_name"] != "DELEGATE"]


@pytest.mark.slow
@ON_ONE_WORKER
def test_int8_mixed_keeps_attention_float(m0, images, tmp_path):
    from keras_evit.export.tflite import FLOAT_OPS

    full, mixed = str(tmp_path / "full.tflite"), str(tmp_path / "mixed.tflite")
    export_model(m0, full, "tflite", "int8", calibration_images=images)
    export_model(m0, mixed, "tflite", "int8-mixed", calibration_images=images)
    for path, attention_type in ((full, np.int8), (mixed, np.float32)):
        ops = _op_input_types(path)
        assert {t for name, t in ops if name in FLOAT_OPS} == {attention_type}, path
        convs = [t for name, t in ops if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
        assert len(convs) > 100 and set(convs) == {np.int8}, path


@ON_ONE_WORKER
def test_onnx_parity_and_metadata(m0, images, tmp_path):
    import json

    import onnx

    from keras_evit.export.metadata import model_info

    out = str(tmp_path / "m0.onnx")
    info = model_info(m0, ke.preprocessing.imagenet_class_names())
    report = export_model(m0, out, "onnx", verify_images=images, batch_size=None, metadata=info)
    assert report["verification"]["passed"] and report["verification"]["max_abs_diff"] <= 1e-4
    assert report["opset"] == 17
    props = {p.key: p.value for p in onnx.load(out).metadata_props}  # labels and preprocessing travel in the file
    assert json.loads(props["labels"]) == ke.preprocessing.imagenet_class_names()
    assert "center crop" in props["preprocessing"] and json.loads(props["norm_std"]) == [1.0]
    # raw pixels in: the normalization runs channels-first, behind the input's transpose, straight into the stem
    nodes = onnx.load(out).graph.node
    assert [n.op_type for n in nodes[:4]] == ["Transpose", "Mul", "Add", "Conv"]
    assert list(nodes[0].input) == ["image"]


def _nhwc_graph(mul_values, reuse_mul=False):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.asarray(mul_values, np.float32), "s"),
             numpy_helper.from_array(np.asarray([-1.0, 0.5, 2.0], np.float32), "o")]
    nodes = [helper.make_node("Mul", ["image", "s"], ["m"]), helper.make_node("Add", ["m", "o"], ["a"]),
             helper.make_node("Transpose", ["a"], ["t"], perm=[0, 3, 1, 2]), helper.make_node("Relu", ["t"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5, 4])]
    if reuse_mul:
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [2, 5, 4, 3]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 5, 4, 3])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("mul_values,reuse_mul,moved", [
    ([0.5, -2.0, 3.0], False, 2), ([4.0], False, 2), ([0.5, -2.0, 3.0], True, 0)])
def test_channels_first_input_ops_keep_the_outputs(mul_values, reuse_mul, moved):
    """Per-channel ops on the NHWC input move behind its transpose with their constants reshaped, outputs
    unchanged; a chain whose tensors are used elsewhere is left as it is."""
    import onnx
    import onnxruntime as ort

    from keras_evit.export.onnx import channels_first_input_ops

    x = np.random.RandomState(0).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)
    proto = _nhwc_graph(mul_values, reuse_mul)
    before = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x})
    assert channels_first_input_ops(proto) == moved
    onnx.checker.check_model(proto)
    after = ort.InferenceSession(proto.SerializeToString()).run(None, {"image": x})
    np.testing.assert_allclose(after[0], before[0], rtol=1e-6)
    if moved:
        assert [n.op_type for n in proto.graph.node] == ["Transpose", "Mul", "Add", "Relu"]


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    import keras

    import keras_evit.export.verify as verify

    monkeypatch.setattr(verify, "FP32_ATOL", -1.0)  # impossible threshold
    inputs = keras.Input((16, 16, 3))  # what happens to a file that fails does not depend on the model
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3)(inputs))))
    x = np.random.RandomState(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    for fmt in ("onnx", "tflite"):
        with pytest.raises(ExportError, match="verification failed"):
            export_model(model, str(tmp_path / f"m.{fmt}"), fmt, verify_images=x)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("argv,match", [
    (["--format", "tensorrt", "--output", "x.plan"], "unknown export format"),
    (["--format", "coreml", "--quantize", "int8", "--output", "x.mlpackage"], "supports --quantize none"),
    (["--quantize", "int4", "--output", "x.tflite"], "unknown quantization"),
    (["--quantize", "int8", "--output", "x.tflite"], "needs calibration images"),
    (["--quantize", "int8", "--calibration-dir", "/nonexistent/dir", "--output", "x.tflite"],
     "image folder not found"),
    (["--format", "onnx", "--quantize", "fp16", "--output", "x.onnx"], "fp32 only"),
    (["--quantize", "int8-mixed", "--int8-io", "--calibration-dir", ".", "--output", "x.tflite"],
     "--int8-io needs"),
])
def test_cli_bad_inputs(tmp_path, capsys, argv, match, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--model", "m0", "--weights", "none", *argv]) == 2
    assert match in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_unreadable_images_are_skipped_and_reported(tmp_path, sample_dir):
    import shutil

    shutil.copy(os.path.join(sample_dir, "n01440764_tench.JPEG"), tmp_path / "ok.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    images, skipped = load_folder(str(tmp_path), 64)
    assert images.shape == (1, 64, 64, 3)
    assert len(skipped) == 1 and "broken.jpg" in skipped[0]
    (tmp_path / "ok.jpg").unlink()
    with pytest.raises(ValueError, match="no readable images"):
        load_folder(str(tmp_path), 64)


@pytest.mark.slow  # the command line end to end: build, export, verify on real images, report
def test_cli_export_prints_verdict(tmp_path, capsys, sample_dir):
    out = str(tmp_path / "m0.tflite")
    assert main(["export", "--model", "m0", "--weights", "none", "--image-size", "96", "--output", out,
                 "--verify-dir", sample_dir, "--verify-limit", "8", "--report", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "builtin ops only: yes" in text and "PASS" in text and "GPU delegate" in text
    assert sorted(os.listdir(tmp_path)) == ["m0.tflite", "r.json"]


@functools.lru_cache(maxsize=1)
def _randomized(variant):
    """One model per variant for all its modes, so they share its SavedModel (traced and saved once)."""
    return randomize(ke.build_model(variant, weights=None, classifier_activation=None))


@pytest.mark.slow  # the modes whose kernels depend on the variant's shapes; fp16 and dynamic only recast weights
@pytest.mark.parametrize("fmt,quantize", [("tflite", "none"), ("tflite", "int8"), ("tflite", "int8-mixed"),
                                          ("onnx", "none")])
@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.xdist_group(f"variant_{v}"))
                                     for v in ("m1", "m2", "m3", "m4", "m5")])
def test_all_variants_export(variant, fmt, quantize, images, tmp_path):
    model = _randomized(variant)
    report = export_model(model, str(tmp_path / f"m.{fmt}"), fmt, quantize, calibration_images=images,
                          verify_images=images)
    v = report["verification"]
    if fmt == "tflite":
        assert report["non_builtin_ops"] == [] and report["gpu_delegate_compatible"] is True
    if quantize == "none":
        assert v["passed"] is True
    else:
        print(f"{variant} {quantize}: cosine {v['cosine_mean']:.4f}, top-1 agreement {v['top1_agreement']:.2%}")
        assert v["passed"] is None and v["cosine_mean"] > 0.9


@pytest.mark.slow  # a Core ML conversion through the command line
def test_coreml_image_input_and_class_labels(tmp_path, capsys):
    """Core ML: an RGB image input (raw pixels, the model normalizes) and the labels in the model."""
    ct = require("coremltools")
    out = str(tmp_path / "m0.mlpackage")
    assert main(["export", "--model", "m0", "--weights", "none", "--format", "coreml", "--quantize", "fp16",
                 "--image-size", "96", "--output", out]) == 0
    assert "image 96x96 RGB" in capsys.readouterr().out
    assert os.path.isdir(out) and sorted(os.listdir(tmp_path)) == ["m0.mlpackage"]
    spec = ct.utils.load_spec(out)
    image = spec.description.input[0].type
    assert image.WhichOneof("Type") == "imageType" and (image.imageType.width, image.imageType.height) == (96, 96)
    assert image.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    outputs = {o.name: o.type.WhichOneof("Type") for o in spec.description.output}
    assert outputs == {"classLabel": "stringType", "classLabel_probs": "dictionaryType"}  # a classifier
    program = spec.mlProgram.SerializeToString()
    assert all(name.encode() in program for name in ke.preprocessing.imagenet_class_names())


def test_probabilities_are_verified_as_strictly_as_logits():
    """Near-uniform softmax outputs hide logit errors; the check runs on log-probabilities instead."""
    from keras_evit.export.verify import compare

    logits = np.random.RandomState(0).randn(4, 1000) * 0.1
    off = logits.copy()
    off[:, 0] += 3e-4  # a logit error three times the fp32 threshold
    softmax = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
    assert np.abs(softmax(logits) - softmax(off)).max() < 1e-6  # invisible in probability space
    result = compare(softmax(logits), softmax(off))
    assert result["compared"] == "log-probabilities" and result["passed"] is False
    assert compare(softmax(logits), softmax(logits))["passed"] is True


@pytest.mark.slow  # a whole LiteRT conversion through Keras' own exporter
def test_keras_own_litert_export_works(tmp_path):
    """Keras 3's ``model.export(path, format="litert")`` on our model: builtin ops, Keras' logits."""
    from keras_evit.export import TFLiteRunner

    from conftest import raw_images

    model = randomize(ke.EfficientViTM0(weights=None, input_shape=(96, 96, 3), classifier_activation=None))
    path = str(tmp_path / "keras_own.tflite")
    model.export(path, format="litert")
    assert non_builtin_ops(path) == []
    x = raw_images(1, 96)
    expected = model.predict(x, verbose=0)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(TFLiteRunner(path)(x), expected, atol=1e-4)


def test_non_finite_outputs_leave_no_file(images, tmp_path, monkeypatch):
    """Finite weights whose outputs overflow (a head of 3e38): refused before any conversion, no file."""
    import keras_evit.export as export

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    for w in model.get_layer("head").weights:  # BN scale x linear kernel = 9e76: beyond float32
        if w.path.endswith(("gamma", "kernel")):
            w.assign(np.full(w.shape, 3e38, np.float32))
    for converter in ("to_tflite", "to_onnx"):
        monkeypatch.setattr(export, converter, lambda *a, **k: pytest.fail("converted a model that overflows"))
    small = np.stack([ke.preprocessing.center_crop(x, 64) for x in images[:2]])
    with pytest.raises(ExportError, match="the model outputs NaN/Inf on its verification images"):
        export_model(model, str(tmp_path / "m0.tflite"), verify_images=small)
    assert os.listdir(tmp_path) == []


def test_nan_keras_file_is_refused_by_predict_convert_and_export(tmp_path, sample_dir, capsys):
    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    bias = model.get_layer("head").linear.bias
    bias.assign(np.full(bias.shape, np.nan, np.float32))
    path = str(tmp_path / "nan.keras")
    model.save(path)
    image = os.path.join(sample_dir, "n01440764_tench.JPEG")
    for argv in (["predict", image], ["convert", path, "--output", str(tmp_path / "out.weights.h5")],
                 ["export", "--quantize", "dynamic", "--output", str(tmp_path / "out.tflite")]):
        args = argv + (["--weights", path] if argv[0] != "convert" else [])
        assert main(args) == 2, argv
        err = capsys.readouterr().err
        assert "nan.keras: variable" in err and "non-finite values" in err, err
    assert sorted(os.listdir(tmp_path)) == ["nan.keras"]
