"""Screenshots of the real napari window for the README walkthrough (``docs/images/*.png``).

Opens napari at 1280×800 with the plugin's sample data, docks the "LLM4Seg" panel through the plugin manifest,
runs segmentations, clicks and a fine-tune, and saves ``viewer.screenshot(canvas_only=False)`` of the shown window.
Needs a display:

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshots.py \
        [--checkpoint NAME_OR_FILE] [--ct-checkpoint NAME_OR_FILE]

With the untrained ``default`` model the masks are empty or noise: pass trained checkpoints for the README.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
PLUGIN, WIDGET = "napari-llm4seg", "LLM4Seg"


def wait(condition: Callable[[], bool], timeout: float = 900.0) -> None:
    """Process Qt events until ``condition()`` holds."""
    from qtpy.QtWidgets import QApplication

    app, end = QApplication.instance(), time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError(f"gave up after {timeout:.0f} s")
        app.processEvents()
        time.sleep(0.01)


def settle(seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    wait(lambda: time.perf_counter() > end)


def shot(viewer: Any, out: Path, name: str) -> Path:
    settle()
    path = out / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def segment(widget: Any, layer: Any) -> None:
    if not widget.run(layer):
        raise RuntimeError(f"segmentation did not start: {widget.status.text()}")
    wait(lambda: not widget.busy)
    print(f"  {widget.status.text()}")


def clicks_shot(viewer: Any, panel: Any, image: Any, truth: Any, out: Path, clicks: int = 2) -> None:
    """Correct with clicks on the segmented BUSI sample: the clicks the simulated user makes against the expert
    mask (centre of the largest error), then the Segment tab scrolled to the clicks section."""
    from PIL import Image

    from llm4seg.interactive import next_click

    ctl = panel.segment.clicks
    ctl.set_active(True)
    labels = viewer.layers[f"{image.name} labels"]
    for _ in range(clicks):
        click = next_click(labels.data == 1, truth.data > 0)
        if click is None:
            break
        taken = ctl.click(image.data_to_world((click.y, click.x)), click.positive)
        if not taken:  # the first click starts loading the click model: click again once it is there
            wait(lambda: not ctl.busy)
            taken = ctl.click(image.data_to_world((click.y, click.x)), click.positive)
        if not taken:
            raise RuntimeError(f"the click was not taken: {ctl.panel.status.text()}")
        wait(lambda: not ctl.busy)
    print(f"  {ctl.panel.status.text()}")
    for area in panel.scroll_areas():
        area.ensureWidgetVisible(ctl.panel)
    path = shot(viewer, out, "clicks-panel.png")
    Image.open(path).convert("RGB").save(path, optimize=True)  # no alpha: under 300 KB
    ctl.set_active(False)
    for area in panel.scroll_areas():  # the next shots show the top of the tab
        area.verticalScrollBar().setValue(0)


def finetune_shot(viewer: Any, panel: Any, out: Path) -> None:
    """The CT sample with 3 labelled slices: a quick fine-tune of the default, then "Label this next"."""
    import numpy as np

    seg, ft = panel.segment, panel.finetune
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    seg.load_checkpoint("default")
    wait(lambda: not seg.busy)
    volume, reference = viewer.open_sample(PLUGIN, "ircad17_ct")
    sparse = np.zeros_like(reference.data)
    for z in (15, 30, 45):
        sparse[z] = reference.data[z]
    viewer.layers.remove(reference)
    mine = viewer.add_labels(sparse, name="my liver (3 slices)", scale=volume.scale, translate=volume.translate)
    panel.show_section(1)
    settle()
    if not ft.run():
        raise RuntimeError(f"fine-tuning did not start: {ft.bar.status.text()}")
    wait(lambda: not ft.busy)
    ft.use_now()
    wait(lambda: seg.model is ft.outcome.model)
    segment(seg, volume)  # the whole volume with the fine-tuned weights
    viewer.layers.selection.active = mine
    ft.suggest_panel.suggest()
    wait(lambda: not ft.suggest_panel.busy)
    viewer.dims.set_current_step(0, 30)
    viewer.reset_view()
    shot(viewer, out, "finetune_widget.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default", help="checkpoint name or .safetensors file to show")
    parser.add_argument("--ct-checkpoint", default=None,
                        help="checkpoint for the CT part (e.g. a liver model); default: the one above")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="output folder")
    parser.add_argument("--size", default="1280x800", help="window size, WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari
    from qtpy.QtCore import QSettings

    # start from default settings, and leave the user's saved ones alone
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp(prefix="llm4seg-shots-"))
    viewer = napari.Viewer(show=True, title="napari-llm4seg")
    viewer.window.resize(*(int(v) for v in args.size.lower().split("x")))
    try:
        _, llm4seg = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        widget = llm4seg.segment
        wait(lambda: not widget.busy)
        if args.checkpoint != widget.model_name:
            widget.load_checkpoint(args.checkpoint)
            wait(lambda: not widget.busy)
        if widget.model is None:
            raise RuntimeError(f"no model: {widget.status.text()}")

        # 1. breast ultrasound: the sample with its expert mask, then the model's labels
        busi = viewer.open_sample(PLUGIN, "busi")
        image = busi[0]
        viewer.layers.selection.active = image
        settle()
        viewer.reset_view()
        shot(viewer, out, "segment_widget.png")
        segment(widget, image)
        busi[1].visible = False  # show the model's labels, not the expert mask
        shot(viewer, out, "segment_busi.png")
        clicks_shot(viewer, llm4seg, image, busi[1], out)

        # 2. abdominal CT: the current slice, then the whole volume with post-processing
        for layer in list(viewer.layers):
            viewer.layers.remove(layer)
        ct = viewer.open_sample(PLUGIN, "ircad17_ct")
        volume = ct[0]
        viewer.layers.selection.active = volume
        ct[1].visible = False
        if args.ct_checkpoint and args.ct_checkpoint != widget.model_name:
            widget.load_checkpoint(args.ct_checkpoint)
            wait(lambda: not widget.busy)
        viewer.dims.set_current_step(0, volume.data.shape[0] // 2)
        panel = widget.input_panel
        panel.scope.setCurrentIndex(panel.scope.findData("slice"))
        widget.post_panel.largest.setChecked(True)
        widget.post_panel.fill.setChecked(True)
        segment(widget, volume)
        viewer.reset_view()
        shot(viewer, out, "segment_ct_slice.png")
        finetune_shot(viewer, llm4seg, out)
    finally:
        viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
