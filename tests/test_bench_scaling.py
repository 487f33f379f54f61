"""`flashvideo bench scaling` (the paper's Figure 6) on tiny models: every method at every point, and the report."""

import json

from flashvideo.evaluation.bench_scaling import METHODS, ScalingPoint, crossing, run_scaling_benchmark


def test_scaling_benchmark_times_every_method_at_every_length_and_resolution(tiny_benchmark_pipeline, tmp_path):
    pipe = tiny_benchmark_pipeline
    report = run_scaling_benchmark(tmp_path, pipe, lengths=(6, 11), resolutions=((16, 4), (32, 8)))
    rows = json.loads((tmp_path / "scaling.json").read_text())
    assert [(row["sweep"], row["num_frames"], row["image_size"]) for row in rows] == [
        ("length", 6, 16), ("length", 11, 16), ("resolution", 16, 16), ("resolution", 16, 32),
    ]  # fmt: skip
    for row in rows:
        assert set(row["seconds"]) == set(METHODS) and all(seconds > 0 for seconds in row["seconds"].values())
    # (b) numbers more frames than the trained pipeline's serial numbers allow: it runs on a model that can.
    text = report.read_text()
    assert "(a) vs (c)" in text and "reaches 9.17×" in text
    assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_crossing_interpolates_between_measured_points():
    def point(frames, a, c):
        return ScalingPoint("length", frames, 64, 16, {"a": a, "b": 1.0, "c": c, "d": 1.0})

    points = [point(16, 1.0, 8.0), point(32, 1.0, 10.0)]
    assert crossing(points, "length").startswith("between 16 (8.00×) and 32 (10.00×), at about 25")
    assert crossing(points[:1], "length") == "not within the measured range (largest 8.00×)"
    assert crossing([point(16, 1.0, 20.0)], "length") == "already at 16 (20.00×)"
