"""The paper's RandAugment, ``rand-m9-mstd0.5-inc1`` as timm runs it: the same 15 PIL operations, levels,
probabilities and fill, drawing its randomness from a numpy ``Generator`` instead of the global ``random``.

The reference trains with timm's transforms, which apply each of the 2 picked ops with probability 0.5
(one op per image on average) on uint8 PIL images, with a Gaussian-jittered magnitude. Keras'
``RandAugment`` is a different augmentation (11 ops, both always applied, no jitter) and runs each op as
several float image passes, 5-10x the time of PIL's.
"""

from PIL import Image, ImageEnhance, ImageOps

LEVEL_DENOM = 10.0
# timm's train transform fills with the ImageNet mean in 0..255 and keeps the recipe's (bicubic) resampling
IMAGENET_FILL = (124, 116, 104)


def _negated(value, rng):
    return -value if rng.random() > 0.5 else value


def _enhance_level(level, rng):
    return max(0.1, 1.0 + _negated(level / LEVEL_DENOM * 0.9, rng))


def _affine(img, matrix, fill, resample):
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _solarize_add(img, add, thresh=128):
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img, bits):
    """Keeps ``bits`` high bits; 0 gives black, as in the Pillow the reference trained with (Pillow 11
    refuses 0, which the reference's level reaches when the jittered magnitude is clipped to 10)."""
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - bits) - 1)
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


# name -> fn(img, level, rng, fill, resample): timm's _RAND_INCREASING_TRANSFORMS with their level_to_arg
OPS = {
    "AutoContrast": lambda img, m, rng, fill, rs: ImageOps.autocontrast(img),
    "Equalize": lambda img, m, rng, fill, rs: ImageOps.equalize(img),
    "Invert": lambda img, m, rng, fill, rs: ImageOps.invert(img),
    "Rotate": lambda img, m, rng, fill, rs: img.rotate(_negated(m / LEVEL_DENOM * 30.0, rng), resample=rs,
                                                       fillcolor=fill),
    "PosterizeIncreasing": lambda img, m, rng, fill, rs: _posterize(img, 4 - int(m / LEVEL_DENOM * 4)),
    "SolarizeIncreasing": lambda img, m, rng, fill, rs: ImageOps.solarize(
        img, 256 - min(256, int(m / LEVEL_DENOM * 256))),
    "SolarizeAdd": lambda img, m, rng, fill, rs: _solarize_add(img, min(128, int(m / LEVEL_DENOM * 110))),
    "ColorIncreasing": lambda img, m, rng, fill, rs: ImageEnhance.Color(img).enhance(_enhance_level(m, rng)),
    "ContrastIncreasing": lambda img, m, rng, fill, rs: ImageEnhance.Contrast(img).enhance(_enhance_level(m, rng)),
    "BrightnessIncreasing": lambda img, m, rng, fill, rs: ImageEnhance.Brightness(img).enhance(
        _enhance_level(m, rng)),
    "SharpnessIncreasing": lambda img, m, rng, fill, rs: ImageEnhance.Sharpness(img).enhance(
        _enhance_level(m, rng)),
    "ShearX": lambda img, m, rng, fill, rs: _affine(img, (1, _negated(m / LEVEL_DENOM * 0.3, rng), 0, 0, 1, 0),
                                                    fill, rs),
    "ShearY": lambda img, m, rng, fill, rs: _affine(img, (1, 0, 0, _negated(m / LEVEL_DENOM * 0.3, rng), 1, 0),
                                                    fill, rs),
    "TranslateXRel": lambda img, m, rng, fill, rs: _affine(
        img, (1, 0, _negated(m / LEVEL_DENOM * 0.45, rng) * img.size[0], 0, 1, 0), fill, rs),
    "TranslateYRel": lambda img, m, rng, fill, rs: _affine(
        img, (1, 0, 0, 0, 1, _negated(m / LEVEL_DENOM * 0.45, rng) * img.size[1]), fill, rs),
}


class RandAugment:
    """``num_ops`` ops drawn with replacement, each applied with ``prob`` at magnitude N(magnitude, std)
    clipped to [0, 10]: timm's ``rand_augment_transform("rand-m9-mstd0.5-inc1", ...)`` for the defaults."""

    def __init__(self, magnitude=9, num_ops=2, prob=0.5, magnitude_std=0.5, fill=IMAGENET_FILL,
                 resample=Image.BICUBIC):
        self.magnitude, self.num_ops, self.prob, self.magnitude_std = magnitude, num_ops, prob, magnitude_std
        self.fill, self.resample = tuple(fill), resample
        self.names = list(OPS)

    def apply(self, name, img, magnitude, rng):
        """One op at one magnitude (its sign, where it has one, drawn from ``rng``)."""
        return OPS[name](img, magnitude, rng, self.fill, self.resample)

    def __call__(self, img, rng):
        for index in rng.integers(0, len(self.names), size=self.num_ops):
            if self.prob < 1.0 and rng.random() > self.prob:
                continue
            magnitude = rng.normal(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
            img = self.apply(self.names[index], img, max(0.0, min(float(magnitude), LEVEL_DENOM)), rng)
        return img


__all__ = ["IMAGENET_FILL", "OPS", "RandAugment"]
