"""The depthwise-convolution probe: both formulations timed for each of the three computations."""

import functools

from keras_evit.benchmarks import depthwise_probe as probe


def test_probe_times_graph_and_xla_for_forward_and_both_gradients():
    rows = probe.depthwise_probe(shape=(1, 6, 6, 4), iters=2)
    assert [r["op"] for r in rows] == ["forward", "input gradient", "filter gradient"]
    assert all(r["graph_ms"] > 0 and r["xla_ms"] > 0 for r in rows)


def test_main_prints_one_row_per_computation(monkeypatch, capsys):
    monkeypatch.setattr(probe, "depthwise_probe", functools.partial(probe.depthwise_probe, (1, 6, 6, 4), iters=2))
    assert probe.main() == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "XLA / graph" in lines[0] and [line.split()[0] for line in lines[1:]] == ["forward", "input", "filter"]
