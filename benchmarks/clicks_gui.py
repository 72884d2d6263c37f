"""Click to updated layer in the real viewer: ``python -m benchmarks.clicks_gui [--clicks N]`` (under xvfb-run).

The Segment tab segments the BUSI sample 'benign (100)' with busi-lesion, then the simulated user clicks with
*Correct with clicks* on (the clicks go to the shipped click model); each click is timed from the call that a
mouse release makes to the Labels layer holding the new mask (worker, refine, write, events processed).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _wait(app, done, timeout: float = 120.0) -> None:
    end = time.perf_counter() + timeout
    while not done():
        app.processEvents()
        if time.perf_counter() > end:
            raise TimeoutError("the viewer did not finish in time")
        time.sleep(0.001)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.clicks_gui", description=__doc__.splitlines()[0])
    p.add_argument("--clicks", type=int, default=12)
    args = p.parse_args(argv)
    import napari
    from qtpy.QtWidgets import QApplication

    from llm4seg.interactive import iou, next_click
    from llm4seg.io import read_image
    from napari_llm4seg._segment_widget import SegmentWidget

    name = "benign (100).png"
    image = read_image(REPO / "sample_data" / "busi" / "images" / name).array
    truth = read_image(REPO / "sample_data" / "busi" / "masks" / "0" / name).array > 0
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LLM4Seg: Segment")
    layer = viewer.add_image(image, name="benign (100)")
    _wait(app, lambda: not widget.busy and widget.model is not None)
    assert widget.run()
    _wait(app, lambda: not widget.busy)
    labels = viewer.layers["benign (100) labels"]
    widget.clicks.set_active(True)
    times = []
    for k in range(args.clicks + 1):
        mask = np.asarray(labels.data) == 1
        c = next_click(mask, truth)
        if c is None:
            break
        t0 = time.perf_counter()
        while not widget.clicks.click(layer.data_to_world((c.y, c.x)), c.positive):
            _wait(app, lambda: not widget.clicks.busy)  # the first click waits for the click model to load
            t0 = time.perf_counter()
        _wait(app, lambda: not widget.clicks.busy)
        if k:  # the first click includes loading the click model
            times.append(1e3 * (time.perf_counter() - t0))
        print(f"click {k + 1}: IoU {iou(np.asarray(labels.data) == 1, truth):.3f}, {1e3 * (time.perf_counter() - t0):.0f} ms",
              flush=True)
    print(f"click to updated layer: {np.median(times):.0f} ms median, {np.percentile(times, 95):.0f} ms p95 "
          f"over {len(times)} clicks ({widget.clicks.panel.model.text()})")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
