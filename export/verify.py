"""Verification of an exported file against the Keras model it came from."""

import numpy as np

# pass marks: fp32 absolute, fp16 relative to the largest reference logit
FP32_ATOL = 1e-4
FP16_RTOL = 1e-2


def _log_scores(scores):
    """Probabilities -> log-probabilities: their differences are logit differences (softmax rows share one
    normalization), so the fp32/fp16 thresholds stay as strict as on logits."""
    return np.log(np.clip(scores, 1e-30, None))


def is_probabilities(scores):
    scores = np.asarray(scores, np.float64)
    return bool(scores.ndim == 2 and (scores >= 0).all() and np.allclose(scores.sum(-1), 1.0, atol=1e-3))


def compare(reference, candidate, quantize="none"):
    """Metrics and a verdict for ``candidate`` outputs against ``reference`` (same images). Softmax
    outputs are compared as log-probabilities (see ``_log_scores``)."""
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    probabilities = is_probabilities(reference)
    space = _log_scores if probabilities else (lambda s: s)
    diff = float(np.abs(space(reference) - space(candidate)).max())
    rel = diff / max(float(np.abs(space(reference)).max()), 1e-12)
    cos = np.sum(reference * candidate, 1) / (np.linalg.norm(reference, axis=1)
                                              * np.linalg.norm(candidate, axis=1) + 1e-12)
    top1 = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
    result = {"max_abs_diff": diff, "max_rel_diff": rel, "cosine_mean": float(cos.mean()),
              "cosine_min": float(cos.min()), "top1_agreement": top1, "images": int(len(reference)),
              "compared": "log-probabilities" if probabilities else "outputs"}
    if quantize == "none":
        result["passed"], result["criterion"] = diff <= FP32_ATOL, f"max|diff| <= {FP32_ATOL:g}"
    elif quantize == "fp16":
        result["passed"], result["criterion"] = rel <= FP16_RTOL, f"relative diff <= {FP16_RTOL:g}"
    else:  # int8 modes have no pass line in the spec: report cosine and top-1 agreement
        result["passed"], result["criterion"] = None, "reported (cosine, top-1 agreement)"
    return result


def describe(result):
    verdict = {True: "PASS", False: "FAIL", None: "INFO"}[result["passed"]]
    return (f"{verdict}: max|diff| {result['max_abs_diff']:.2e}, relative {result['max_rel_diff']:.2e}, "
            f"cosine mean {result['cosine_mean']:.5f} (min {result['cosine_min']:.5f}), top-1 agreement "
            f"{100 * result['top1_agreement']:.1f}% on {result['images']} images [{result['criterion']}, "
            f"{result.get('compared', 'outputs')}]")
