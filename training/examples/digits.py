"""EfficientViT-M0 from scratch on the handwritten digits keras-evit ships (UCI's 1,797 real 8x8 digits,
upscaled to 64 px): prints the learning curve and the final validation accuracy (goal >= 95%).

    python -m keras_evit.training.examples.digits [--output runs/digits] [--epochs 40]
"""

import argparse
import csv
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join("runs", "digits"))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--model", default="m0")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from keras_evit.training import get_recipe, train

    recipe = get_recipe("digits", epochs=args.epochs)
    started = time.perf_counter()
    results = train(args.model, "digits", args.output, recipe, strategy="default",
                    verbose="auto" if sys.stdout.isatty() else 2)
    minutes = (time.perf_counter() - started) / 60
    print("\nepoch  train_loss  train_acc  val_loss  val_acc")
    with open(os.path.join(args.output, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            print(f"{int(row['epoch']) + 1:5d}  {float(row['loss']):10.4f}  {float(row['accuracy']):9.4f}  "
                  f"{float(row['val_loss']):8.4f}  {float(row['val_accuracy']):7.4f}")
    acc = results["accuracy"]
    print(f"\nfinal validation accuracy {100 * acc:.2f}% (goal >= 95%) in {minutes:.1f} min; "
          f"curve: {os.path.join(args.output, 'curves.png')}")
    return 0 if acc >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
