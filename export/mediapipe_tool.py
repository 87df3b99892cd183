"""MediaPipe side of the TFLite export, run in MediaPipe's own Python environment.

MediaPipe 0.10.21 pins protobuf < 5 and numpy < 2, which TensorFlow 2.21 cannot share, so this file
imports nothing from keras_evit or TensorFlow: ``keras-evit setup-mediapipe`` makes the environment and
``keras_evit.export.metadata`` runs this file there as a child process.

    python mediapipe_tool.py write IN.tflite OUT.tflite SPEC.json   # MediaPipe metadata writer
    python mediapipe_tool.py classify MODEL.tflite IMAGE.npy TOP     # MediaPipe Tasks ImageClassifier
"""

import json
import os
import sys


def write_metadata(src, dst, spec_path):
    """Image-classifier metadata: general info, RGB image input with its normalization, labelled scores."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_info, metadata_writer

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    with open(src, "rb") as f:
        model = f.read()
    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    writer.add_general_info(spec["name"], spec["description"])
    # add_general_info takes only name and description; the metadata schema also holds these
    writer._general_md = metadata_info.GeneralMd(
        name=spec["name"], version=spec["version"], description=spec["description"], author=spec["author"],
        licenses=spec["license"])
    writer.add_image_input(spec["norm_mean"], spec["norm_std"], description=spec["input_description"])
    writer.add_classification_output(metadata_writer.Labels().add(spec["labels"]),
                                     description=spec["output_description"])
    content, metadata_json = writer.populate()
    with open(dst, "wb") as f:
        f.write(content)
    print(metadata_json)


def classify(model_path, images_path, top):
    """Top-``top`` (index, name, score) per image from MediaPipe's ImageClassifier, as an app gets them."""
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageClassifier, ImageClassifierOptions

    images = np.load(images_path, allow_pickle=False)
    options = ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model_path), max_results=top)
    results = []
    with ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image, np.uint8))
            categories = classifier.classify(frame).classifications[0].categories
            results.append([(c.index, c.category_name, float(c.score)) for c in categories])
    print(json.dumps(results))


def main(argv):
    os.environ.setdefault("GLOG_minloglevel", "2")
    if len(argv) == 4 and argv[0] == "write":
        write_metadata(*argv[1:])
    elif len(argv) == 4 and argv[0] == "classify":
        classify(argv[1], argv[2], int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
