"""The perf-based kernel profile: symbol grouping, report parsing, and a real sampled run."""

import json
import shutil

import pytest

from keras_evit.benchmarks import kernel_profile as kp

from conftest import missing

REPORT = """
    40.01%     400  libpywrap_litert_common.so   [.] xnn_qs8_qc8w_gemm_minmax_fp32_ukernel_7x16c8__avx512vnni_prfm
    20.01%     200  libpywrap_litert_common.so   [.] xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_7x16c8__avx512vnni_prfm
     5.01%      50  libpywrap_litert_common.so   [.] xnn_qs8_qc8w_dwconv_minmax_fp32_ukernel_9p32c__avx512skx_mul32
     4.01%      40  libpywrap_litert_common.so   [.] xnn_f32_gemm_minmax_ukernel_7x32__avx512f_broadcast
     3.01%      30  libpywrap_litert_common.so   [.] xnn_f32_raddstoreexpminusmax_ukernel__avx512f_rr2_p5_u64_acc2
     2.01%      20  libpywrap_litert_common.so   [.] xnn_run_operator_with_index
     1.51%      15  libc.so.6                    [.] __memmove_avx512_unaligned_erms
    24.51%     245  libpython3.11.so.1.0         [.] _PyEval_EvalFrameDefault
some header line perf prints
"""


def test_symbols_fall_into_their_kernel_groups():
    shares = kp.parse_report(REPORT)
    assert shares["int8 1x1 convolutions and dense (gemm)"] == 40.0
    assert shares["int8 3x3 convolutions (igemm)"] == 20.0  # igemm is not taken for gemm
    assert shares["int8 depthwise convolutions"] == 5.0
    assert shares["float matmuls (attention, dense, 1x1)"] == 4.0
    assert shares["softmax"] == 3.0
    assert shares["runtime dispatch and other LiteRT"] == 2.0
    assert shares["copies (slices, reshapes, concatenation)"] == 1.5
    assert shares[kp.OUTSIDE] == 24.5
    assert list(shares)[0] == "int8 1x1 convolutions and dense (gemm)"  # largest first


def test_shares_come_from_sample_counts_so_they_add_up_to_100():
    """perf rounds each printed row; summed over hundreds of rows that passed 101%."""
    assert sum(kp.parse_report(REPORT).values()) == pytest.approx(100.0, abs=0.01)


def test_kernels_are_counted_by_instruction_set():
    """XNNPACK's micro-kernels by the instruction set in their names (the rest of the report is not theirs)."""
    isas = kp.kernel_isas(REPORT)
    share = lambda n: pytest.approx(100 * n / 720, abs=1e-3)  # noqa: E731  (xnn_run_operator_* is no kernel)
    assert isas == {"avx512vnni": share(600), "avx512skx": share(50), "avx512f": share(70)}


def test_an_empty_report_is_an_error_not_an_empty_profile():
    with pytest.raises(ValueError, match="no samples"):
        kp.parse_report("# only comments\n")


def test_missing_file_is_named(tmp_path):
    if shutil.which("perf") is None:
        with pytest.raises(RuntimeError, match="linux-perf"):
            kp.profile(str(tmp_path / "absent.tflite"))
    else:
        with pytest.raises(FileNotFoundError, match="absent.tflite"):
            kp.profile(str(tmp_path / "absent.tflite"))


@pytest.mark.slow
def test_profile_of_an_exported_file(tmp_path, capsys):
    """A real int8-mixed export, sampled in a fresh process: its int8 convolutions show up, and the
    process's start-up (seconds, against a tenth of a second of invokes here) is not sampled."""
    if shutil.which("perf") is None:
        missing("perf is not installed (make install-perf, or apt-get install linux-perf)")
    import numpy as np

    import keras_evit as ke
    from keras_evit.export import export_model

    model = ke.EfficientViTM0(weights=None, input_shape=(128, 128, 3))
    calibration = np.random.RandomState(0).uniform(0, 255, (4, 128, 128, 3)).astype("float32")
    path = str(tmp_path / "m0.tflite")
    export_model(model, path, "tflite", "int8-mixed", calibration)
    out = tmp_path / "profile.json"
    kp.main([path, "--iterations", "300", "--json", str(out), "--plot", str(tmp_path / "profile.png")])
    shares = json.loads(out.read_text())["percent_of_samples"][path]
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.05)
    convs = sum(v for g, v in shares.items() if g.startswith("int8") and "convolutions" in g)
    assert convs > 10.0, shares
    assert shares.get(kp.OUTSIDE, 0.0) < 25.0, shares  # was 90% when start-up was sampled too
    assert "kernel group" in capsys.readouterr().out and (tmp_path / "profile.png").stat().st_size > 0
    report = json.loads(out.read_text())
    isas = report["xnnpack_kernels_by_isa"][path]
    assert report["no_amx"] is False and abs(sum(isas.values()) - 100.0) < 0.05
    if report["machine"]["int8_kernels"] == "AMX tiles":  # the same file with AMX denied: VNNI kernels instead
        assert isas.get("avx512amx", 0) > 10, isas
        kp.main([path, "--iterations", "300", "--no-amx", "--json", str(out)])
        denied = json.loads(out.read_text())["xnnpack_kernels_by_isa"][path]
        assert "avx512amx" not in denied and denied.get("avx512vnni", 0) > 10, denied
