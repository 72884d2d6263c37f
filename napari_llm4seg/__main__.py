"""``python -m napari_llm4seg``: open napari with the LLM4Seg panel and a sample (what ``make run`` does)."""
from __future__ import annotations

import argparse
import sys

from ._reader import prefer_this_reader

PLUGIN = "napari-llm4seg"
SAMPLES = {"busi": "busi", "ct": "ircad17_ct", "none": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_llm4seg", description=__doc__)
    parser.add_argument("--sample", choices=sorted(SAMPLES), default="busi", help="sample data to open")
    parser.add_argument("files", nargs="*", help="images to open instead of a sample")
    args = parser.parse_args(argv)

    import napari

    prefer_this_reader()
    viewer = napari.Viewer(title="napari — LLM4Seg")
    if args.files:
        viewer.open(args.files, plugin=PLUGIN if all(f.endswith((".nii", ".nii.gz", ".dcm")) for f in args.files) else None)
    elif SAMPLES[args.sample]:
        viewer.open_sample(PLUGIN, SAMPLES[args.sample])
    try:
        viewer.window.add_plugin_dock_widget(PLUGIN, "LLM4Seg")
    except Exception as exc:  # a widget that cannot load must not stop the viewer
        print(f"napari-llm4seg: could not open the LLM4Seg panel: {exc}", file=sys.stderr)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
