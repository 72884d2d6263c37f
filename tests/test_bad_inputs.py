"""Bad inputs to the core and the CLI: each gets a clear message or a safe, stated adaptation; nothing is lost.

Checkpoint refusals (pickles, truncated or lying headers, missing/newer cards, shape mismatches, wrong
sha256) are in test_checkpoint.py; corrupt NIfTI and DICOM series problems in test_io.py; the GUI in
test_bad_inputs_gui.py; training in test_bad_training.py.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
import tracemalloc

import imageio.v3 as iio
import numpy as np
import pytest

from _factories import disk_image, tiny_model
from llm4seg.checkpoint import ModelCard, save_checkpoint
from llm4seg.cli import main
from llm4seg.infer import segment
from llm4seg.largeimage import block_mean, upsample_into
from llm4seg.preprocess import Preprocessing
from llm4seg.cli import EXIT_ERROR


def _with_card(model, channels: int = 1, size: int | None = 64):
    model.card = ModelCard(name="tiny", classes=["background", "fg"], preprocessing=Preprocessing(size=size,
                                                                                                channels=channels).to_dict())
    return model.eval()


@pytest.fixture(scope="module")
def gray_model():
    return _with_card(tiny_model())


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llm4seg", *args], capture_output=True, text=True, cwd=cwd)


# ------------------------------------------------------------------------------------------ checkpoints
def test_cli_refuses_a_pickle_checkpoint_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Exploit(), protocol=4))
    iio.imwrite(tmp_path / "img.png", disk_image()[0])
    proc = _cli("segment", "img.png", "--checkpoint", "evil.pt", "--out", "out", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == EXIT_ERROR and len(lines) == 1 and "pickle" in lines[0], proc.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()
    debug = _cli("--debug", "segment", "img.png", "--checkpoint", "evil.pt", "--out", "out", cwd=tmp_path)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and not marker.exists()


def test_three_channel_checkpoint_on_a_gray_image_replicates_it():
    rgb_model = _with_card(tiny_model(in_channels=3, seed=1), channels=3)
    img, _ = disk_image()
    gray = segment(img, rgb_model, return_probs=True)
    as_rgb = segment(np.repeat(img[..., None], 3, axis=2), rgb_model, return_probs=True)
    assert gray.labels.shape == img.shape
    np.testing.assert_allclose(gray.probs, as_rgb.probs, atol=1e-6)


def test_gray_checkpoint_on_an_rgb_image_uses_luma(gray_model):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (48, 40, 3)).astype(np.uint8)
    luma = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
    a = segment(rgb, gray_model, return_probs=True).probs
    b = segment(luma, gray_model, return_probs=True, window=(127.5, 255.0)).probs
    np.testing.assert_allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------------------------------ images
def test_rgba_alpha_is_ignored(gray_model):
    img, _ = disk_image()
    rgb = np.repeat(img[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.random.default_rng(0).integers(0, 256, img.shape + (1,)).astype(np.uint8)], 2)
    np.testing.assert_array_equal(segment(rgba, gray_model, return_probs=True).probs,
                                  segment(rgb, gray_model, return_probs=True).probs)


def test_sixteen_bit_image_is_scaled_by_its_percentiles(gray_model):
    img, _ = disk_image()
    wide = img.astype(np.uint16) * 200  # same picture, 16-bit range
    a = segment(wide, gray_model, return_probs=True).probs
    b = segment(img.astype(np.float32) * 200, gray_model, return_probs=True).probs
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_float_image_with_nan_and_inf_gives_finite_output(gray_model):
    img = disk_image()[0].astype(np.float32)
    img[:5] = np.nan
    img[-5:, :10] = np.inf
    img[-5:, 10:20] = -np.inf
    result = segment(img, gray_model, return_probs=True)
    assert result.labels.shape == img.shape and np.isfinite(result.probs).all()


def test_constant_image_segments_without_dividing_by_zero(gray_model):
    probs = [segment(np.full((40, 50), value, dtype), gray_model, return_probs=True).probs
             for value, dtype in ((0, np.uint8), (1234, np.int16), (0.5, np.float32))]
    assert all(np.isfinite(p).all() and p.shape == (40, 50) for p in probs)
    # a uniform image carries no contrast: whatever its value and dtype, the network sees the same input
    np.testing.assert_allclose(probs[1], probs[0], atol=1e-6)
    np.testing.assert_allclose(probs[2], probs[0], atol=1e-6)


@pytest.mark.parametrize("size", [None, 64])
def test_image_smaller_than_16_px(gray_model, size):
    model = _with_card(tiny_model(), size=size)
    result = segment(disk_image(10, 12)[0], model)
    assert result.labels.shape == (10, 12)


def test_very_large_2d_image_is_downscaled_with_bounded_memory(gray_model):
    small, _ = disk_image(2000, 2000)
    big = upsample_into(small, 10, np.empty((20000, 20000), np.uint8))  # 400 MB
    tracemalloc.start()
    result = segment(big, gray_model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.labels.shape == big.shape and result.labels.dtype == np.uint8
    assert any("downscaled ×10" in n for n in result.notes)
    # the full-size uint8 mask (400 MB) plus bounded strips; a float copy of the image alone would be 1.6 GB
    assert peak < big.nbytes * 1.5, f"peak {peak / 2**20:.0f} MiB"
    expected = upsample_into(segment(small, gray_model).labels, 10, np.empty(big.shape, np.uint8))
    np.testing.assert_array_equal(result.labels, expected)


def test_block_mean_handles_partial_blocks_and_channels():
    img = np.arange(7 * 5 * 3, dtype=np.uint16).reshape(7, 5, 3)
    out = block_mean(img, 3)
    assert out.shape == (3, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], img[:3, :3].reshape(-1, 3).mean(0))
    np.testing.assert_allclose(out[2, 1], img[6:, 3:].reshape(-1, 3).mean(0))  # partial block: its own pixels
    up = upsample_into(np.arange(6).reshape(2, 3), 3, np.empty((5, 7), int))
    assert up[4].tolist() == [3, 3, 3, 4, 4, 4, 5] and up[:, 6].tolist() == [2, 2, 2, 5, 5]


# ------------------------------------------------------------------------------------------------- files
@pytest.fixture
def tiny_ckpt(tmp_path):
    return save_checkpoint(tmp_path / "tiny.safetensors", tiny_model(), ModelCard(name="tiny",
                                                                                  classes=["background", "fg"]))


def test_cli_output_folder_that_is_a_file(tmp_path, tiny_ckpt, capsys):
    iio.imwrite(tmp_path / "img.png", disk_image()[0])
    (tmp_path / "taken").write_text("not a folder")
    code = main(["segment", str(tmp_path / "img.png"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "taken")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "is a file, not a folder" in err and (tmp_path / "taken").read_text() == "not a folder"


def test_cli_unwritable_output_folder_fails_before_segmenting(tmp_path, tiny_ckpt, capsys, monkeypatch):
    import tempfile

    iio.imwrite(tmp_path / "img.png", disk_image()[0])
    (tmp_path / "ro").mkdir()
    calls = []
    monkeypatch.setattr("llm4seg.infer.iter_segment", lambda *a, **k: calls.append(1))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    code = main(["segment", str(tmp_path / "img.png"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "ro")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_ERROR and len(err) == 1 and "cannot write into the output folder" in err[0] and "--out" in err[0]
    assert not calls  # refused before any work


def test_cli_existing_output_is_never_overwritten_without_asking(tmp_path, tiny_ckpt, capsys):
    iio.imwrite(tmp_path / "img.png", disk_image()[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / "img_labels.png").write_bytes(b"precious")
    code = main(["segment", str(tmp_path / "img.png"), "--checkpoint", str(tiny_ckpt), "--out", str(out)])
    assert code == EXIT_ERROR and "--overwrite" in capsys.readouterr().err
    assert (out / "img_labels.png").read_bytes() == b"precious"
    assert main(["segment", str(tmp_path / "img.png"), "--checkpoint", str(tiny_ckpt), "--out", str(out),
                 "--overwrite"]) == 0
    assert iio.imread(out / "img_labels.png").shape == (64, 64)


def test_failed_overwrite_keeps_the_previous_file(tmp_path, monkeypatch):
    from llm4seg import io

    target = tmp_path / "labels.png"
    target.write_bytes(b"previous mask")

    def broken(tmp, arr):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_write_png", broken)
    with pytest.raises(OSError, match="No space"):
        io.write_labels(target, np.ones((8, 8), np.uint8), overwrite=True)
    assert target.read_bytes() == b"previous mask" and [p.name for p in tmp_path.iterdir()] == ["labels.png"]
