import csv
import os

import numpy as np
import pytest

import keras_evit as ke
from keras_evit.preprocessing import center_crop, imagenet_classes

from conftest import HYMENOPTERA, outputs


def test_normalize_images_values():
    x = np.array([[[[0, 128, 255]]]], np.uint8)
    y = ke.normalize_images(x)
    expected = (np.array([0, 128, 255]) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(y[0, 0, 0], expected, rtol=1e-6)
    assert y.dtype == np.float32
    np.testing.assert_allclose(ke.normalize_images(x.astype("float32")), y)
    with pytest.raises(ValueError, match="3 channels last"):
        ke.normalize_images(np.zeros((1, 3, 4, 4)))


def test_preprocess_input_is_a_pass_through_and_the_model_normalizes():
    """keras.applications EfficientNetV2 convention: raw RGB in, normalization inside the model."""
    x = np.random.RandomState(0).randint(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    assert ke.preprocess_input(x) is x
    raw = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    plain = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), classifier_activation=None,
                              include_preprocessing=False)
    plain.set_weights(raw.get_weights())
    np.testing.assert_allclose(outputs(raw, x), outputs(plain, ke.normalize_images(x)),
                               atol=1e-5)
    assert raw.get_layer("preprocessing") is not None


def test_normalize_images_in_tf_data():
    import tensorflow as tf

    x = np.full((2, 4, 4, 3), 128, np.uint8)
    ds = tf.data.Dataset.from_tensor_slices(x).map(ke.normalize_images)
    np.testing.assert_allclose(np.stack(list(ds.as_numpy_iterator())), ke.normalize_images(x), atol=1e-6)


def test_classes_match_sample_labels(sample_dir):
    with open(os.path.join(sample_dir, "labels.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["synset"], r["name"]) for r in rows] == imagenet_classes()


def test_decode_predictions_order():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [1, 999, 3]] = [0.5, 0.3, 0.2]
    preds[1, 0] = 1.0
    decoded = ke.decode_predictions(preds, top=3)
    assert [d[1] for d in decoded[0]] == ["goldfish", "toilet_tissue", "tiger_shark"]
    assert decoded[1][0] == ("n01440764", "tench", 1.0)
    with pytest.raises(ValueError, match=r"\(batch, 1000\)"):
        ke.decode_predictions(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="top must be >= 1"):
        ke.decode_predictions(preds, top=-3)
    custom = ke.decode_predictions(np.array([[0.2, 0.8]]), top=5, class_names=["ants", "bees"])
    assert custom == [[("bees", "bees", 0.8), ("ants", "ants", 0.2)]]


def test_eval_transform(sample_dir):
    from PIL import Image

    path = os.path.join(sample_dir, "n01440764_tench.JPEG")
    image = ke.load_image(path)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    with Image.open(path) as src:
        w, h = src.size
        short = min(w, h)
        resized = src.convert("RGB").resize((256 * w // short, 256 * h // short), Image.BICUBIC)
    left, top = round((resized.width - 224) / 2), round((resized.height - 224) / 2)
    expected = np.asarray(resized)[top:top + 224, left:left + 224]
    np.testing.assert_array_equal(image, expected)


def test_greyscale_and_gif_become_rgb(tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((300, 200), 90, np.uint8)).save(grey)
    assert ke.load_image(str(grey)).shape == (224, 224, 3)
    gif = os.path.join(HYMENOPTERA, "train", "ants", "imageNotFound.gif")
    if os.path.exists(gif):
        assert ke.load_image(gif, 96).shape == (96, 96, 3)


def test_unreadable_image_names_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        ke.load_image(str(bad))
    with pytest.raises(FileNotFoundError, match="image not found"):
        ke.load_image(str(tmp_path / "missing.jpg"))


def test_sixteen_bit_png_is_scaled_not_saturated(tmp_path):
    from PIL import Image

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((80, 80), 32896, np.uint16)).save(path)  # 16-bit grey, half brightness
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    image = ke.load_image(str(path), 64)
    assert image.shape == (64, 64, 3) and abs(int(image.mean()) - 128) <= 1


def test_decompression_bomb_is_a_clear_per_image_error(tmp_path):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 400 M pixels in a few kB: PIL's own guard
    assert os.path.getsize(bomb) < 1_000_000
    with pytest.raises(ValueError, match="bomb.png is too large to decode.*decompression bomb"):
        ke.load_image(str(bomb))
    big = tmp_path / "big.png"
    Image.new("1", (12000, 10000)).save(big)  # 120 M pixels: under PIL's error line, over ours
    with pytest.raises(ValueError, match="big.png is 12000x10000 pixels, over the 100,000,000-pixel limit"):
        ke.load_image(str(big))


def _jpeg_with_repeated_scan(repeats, progressive=True, side=512):
    """A JPEG whose second scan (progressive: a tiny refinement of one component) is repeated ``repeats``
    times after the last: libjpeg warns of a bogus progression and decodes each again, a pass over the image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, "JPEG", quality=10, progressive=progressive)
    data, scans, i = buf.getvalue(), [], 2
    while data[i + 1] != 0xD9:
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] != 0xDA:
            i += 2 + length
            continue
        end = i + 2 + length  # the scan's entropy-coded data runs to the next marker that is not a stuffed 0xFF
        while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
            end += 1
        scans.append((i, end))
        i = end
    start, end = scans[min(1, len(scans) - 1)]
    return data[:scans[-1][1]] + data[start:end] * repeats + data[scans[-1][1]:], len(scans)


def test_a_jpeg_of_hundreds_of_scans_is_refused_before_decoding(tmp_path):
    """Each scan libjpeg decodes is a pass over the whole image: 1,000 repeated empty scans (12 KB) of a
    2048 px image took 0.34 s, so a few MB of them at 10,000 px take many minutes. Over 256 scans is refused;
    an ordinary progressive file (10 scans) and one with 240 more decode. A baseline file's extra scans are
    never decoded (libjpeg stops after its one scan), so its header alone is read."""
    data, scans = _jpeg_with_repeated_scan(0)
    assert scans == 10
    for repeats, refused in ((0, False), (240, False), (300, True)):
        path = tmp_path / f"scans{repeats}.jpg"
        path.write_bytes(_jpeg_with_repeated_scan(repeats)[0])
        if refused:
            with pytest.raises(ValueError, match="scans300.jpg is a JPEG of more than 256 scans"):
                ke.load_image(str(path))
        else:
            assert ke.load_image(str(path)).shape == (224, 224, 3)
    baseline = tmp_path / "baseline.jpg"
    baseline.write_bytes(_jpeg_with_repeated_scan(300, progressive=False)[0])
    with pytest.raises(ValueError, match="cannot read image .*baseline.jpg"):  # libjpeg's own error, at once
        ke.load_image(str(baseline))


def test_the_jpeg_header_walk_tells_which_files_libjpeg_decodes_scan_by_scan():
    """Baseline files (one interleaved scan) are read no further than their header, as libjpeg decodes no later
    scan of theirs; progressive files are counted; markers without a length are stepped over as libjpeg does."""
    import io

    from PIL import Image

    from keras_evit.preprocessing import _jpeg_decodes_every_scan

    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    files = {}
    for progressive in (False, True):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", progressive=progressive)
        files[progressive] = buf.getvalue()
    assert not _jpeg_decodes_every_scan(io.BytesIO(files[False]))
    assert _jpeg_decodes_every_scan(io.BytesIO(files[True]))
    assert not _jpeg_decodes_every_scan(io.BytesIO(files[False][:2] + b"\xff\x01\xff\xff" + files[False][2:]))
    assert _jpeg_decodes_every_scan(io.BytesIO(files[False][:2] + b"\xff\xd8" + files[False][2:]))
    assert _jpeg_decodes_every_scan(io.BytesIO(files[False][:40]))  # cut before its scan: counted


def test_only_the_supported_formats_are_decoded(tmp_path, monkeypatch):
    """An EPS file named like a JPEG is never handed to Ghostscript (as PIL would), nor any other format
    outside JPEG/MPO/PNG/BMP/WebP/GIF/TIFF; those all decode."""
    from PIL import EpsImagePlugin, Image

    def ghostscript(*args, **kwargs):
        raise AssertionError("PIL ran Ghostscript on a file named photo.jpg")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    assert Image.open(eps).format == "EPS"  # what PIL alone would decode
    with pytest.raises(ValueError, match="cannot read image .*photo.jpg"):
        ke.load_image(str(eps))
    pixels = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    for fmt, suffix in (("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif"),
                        ("TIFF", "tif"), ("PPM", "ppm")):
        path = tmp_path / f"image.{suffix}"
        Image.fromarray(pixels).save(path, fmt)
        if fmt == "PPM":
            with pytest.raises(ValueError, match="cannot read image"):
                ke.load_image(str(path))
        else:
            assert ke.load_image(str(path)).shape == (224, 224, 3)


def test_truncated_jpeg_is_refused(tmp_path, sample_dir):
    data = open(os.path.join(sample_dir, "n01440764_tench.JPEG"), "rb").read()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read image .*cut.jpg"):
        ke.load_image(str(cut))


def test_transparent_png_composites_on_white(tmp_path):
    from PIL import Image

    path = tmp_path / "alpha.png"
    Image.new("RGBA", (70, 70), (0, 0, 0, 0)).save(path)
    assert ke.load_image(str(path), 64).min() == 255


def test_a_fifo_named_like_an_image_is_skipped_not_opened(tmp_path):
    """A FIFO named pipe.jpg would block a reader forever: it is refused from os.stat, per file."""
    import keras_evit as ke
    from keras_evit.export.images import load_folder

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        ke.load_image(str(fifo))
    from PIL import Image

    Image.new("RGB", (80, 70), (10, 200, 30)).save(tmp_path / "good.png")
    images, skipped = load_folder(str(tmp_path), 64)
    assert len(images) == 1 and len(skipped) == 1 and "pipe.jpg" in skipped[0]


def test_a_long_strip_is_refused_from_its_header(tmp_path):
    """A 65000x1 PNG is a few hundred bytes; resizing its short side to 256 would make 16.6 G pixels."""
    from PIL import Image

    path = tmp_path / "strip.png"
    Image.new("RGB", (65000, 1)).save(path)
    assert os.path.getsize(path) < 2000
    with pytest.raises(ValueError, match=r"strip.png is 65000x1 pixels, more than 100:1"):
        ke.load_image(str(path))
    with pytest.raises(ValueError, match="more than 100:1"):
        center_crop(np.zeros((1, 500, 3), np.uint8))
    Image.new("RGB", (1000, 10)).save(tmp_path / "panorama.png")  # 100:1 is still an image
    assert ke.load_image(str(tmp_path / "panorama.png"), 64).shape == (64, 64, 3)


def test_predict_goes_on_after_a_strip(sample_dir, tmp_path, capsys):
    from PIL import Image

    from keras_evit.cli import main

    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 65000)).save(strip)
    weights = str(tmp_path / "m0.weights.h5")
    ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3)).save_weights(weights)
    good = os.path.join(sample_dir, "n01440764_tench.JPEG")
    assert main(["predict", str(strip), good, "--model", "m0", "--weights", weights, "--image-size", "64"]) == 2
    captured = capsys.readouterr()
    assert "strip.png is 1x65000 pixels" in captured.err and "n01440764_tench.JPEG\n  1." in captured.out


def test_the_normalization_is_found_by_type_and_travels_in_the_file(tmp_path):
    """A model says by its config that it takes RGB 0..255 (an ImageNormalization layer, or a stem with it
    folded in); files written when it was a Rescaling named "preprocessing" still count."""
    import keras

    from keras_evit.layers import ImageNormalization
    from keras_evit.preprocessing import has_preprocessing

    model = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3))
    assert isinstance(model.get_layer("preprocessing"), ImageNormalization) and has_preprocessing(model)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert isinstance(keras.models.load_model(path).get_layer("preprocessing"), ImageNormalization)
    assert has_preprocessing(ke.fold_normalization(ke.fuse_batchnorm(model)))  # folded into the stem
    plain = ke.EfficientViTM0(weights=None, input_shape=(64, 64, 3), include_preprocessing=False)
    assert not has_preprocessing(plain)
    renamed = keras.Model(plain.inputs, plain.outputs)
    assert not has_preprocessing(keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Rescaling(2.0, name="pre"),
                                                   renamed]))  # any Rescaling is not the normalization
    legacy = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Rescaling(2.0, name="preprocessing"), renamed])
    assert has_preprocessing(legacy)
    x = np.random.RandomState(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(ImageNormalization()(x), ke.normalize_images(x), atol=1e-6)


def test_training_decoder_gives_predicts_pixels_in_every_mode(tmp_path, sample_dir):
    """``decode_rgb`` (training's PIL image) holds ``decode_image``'s pixels, and refuses what it refuses."""
    from PIL import Image

    from keras_evit.preprocessing import decode_image, decode_rgb

    rng = np.random.default_rng(0)
    files = [os.path.join(sample_dir, "n01440764_tench.JPEG")]
    for mode, array in [("L", rng.integers(0, 255, (30, 40), np.uint8)),
                        ("RGBA", rng.integers(0, 255, (30, 40, 4), np.uint8)),
                        ("I;16", rng.integers(0, 65535, (30, 40), np.uint16))]:
        files.append(str(tmp_path / f"{mode.replace(';', '')}.png"))
        Image.fromarray(array).save(files[-1])
    files.append(str(tmp_path / "cmyk.jpg"))
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8)).convert("CMYK").save(files[-1])
    for path in files:
        img = decode_rgb(path)
        assert img.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(img), decode_image(path), err_msg=path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*broken.jpg"):
        decode_rgb(str(tmp_path / "broken.jpg"))
