"""The demo end to end over DDS, and the pictures it writes: overlays with a legend and one contact sheet."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from human_parsing_ros import render
from human_parsing_ros.class_sets import get_class_set


def test_legend_lists_the_classes_present_with_their_colours():
    hri = get_class_set("hri")
    labels = np.zeros((120, 80), np.uint8)
    labels[10:60, 10:40] = hri.index("hair")
    labels[70:80, 5:15] = hri.index("bag")
    picture = np.zeros((120, 80, 3), np.uint8)
    out = render.with_legend(picture, labels, hri.names, hri.palette)
    assert out.shape[0] == 120 and out.shape[1] > 80 and np.array_equal(out[:, :80], picture)
    strip = out[:, 80:].reshape(-1, 3)
    colours = {tuple(c) for c in strip.tolist()}
    assert tuple(hri.palette[hri.index("hair")]) in colours and tuple(hri.palette[hri.index("bag")]) in colours
    assert tuple(hri.palette[hri.index("skin")]) not in colours  # absent classes get no swatch


def test_contact_sheet_tiles_every_picture():
    pictures = [np.full((50, 40 + 10 * i, 3), 30 * i, np.uint8) for i in range(5)]
    sheet = render.contact_sheet(pictures, columns=3, height=100)
    assert sheet.shape == (200, 3 * 160, 3)  # 2 rows of 3 cells, each as wide as the widest scaled picture
    assert (sheet[0:100, 0:80] == 0).all() and (sheet[0:100, 80:160] == 255).all()  # picture 0, then white
    assert (sheet[100:200, 160:320] == 120).all()  # picture 4: second row, second cell


def test_the_demo_writes_overlays_with_legends_and_a_contact_sheet(tmp_path, capsys):
    pytest.importorskip("rclpy")
    from human_parsing_ros.tools import demo
    from human_parsing_ros.tools.random_weights import make_random_weights

    weights = make_random_weights(tmp_path / "w.safetensors", "hri", input_size=(96, 96))
    with pytest.raises(SystemExit) as exit_code:
        demo.main(["--out", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu", "--loops", "1"])
    assert exit_code.value.code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    sheet = tmp_path / "out" / "contact_sheet.png"
    assert last.endswith(str(sheet)) and sheet.is_file()
    overlays = sorted((tmp_path / "out").glob("overlay_*.png"))
    assert overlays and Image.open(sheet).height >= 360
    photo_width = Image.open(overlays[0]).width
    assert photo_width > 550  # the photo (550 wide) plus its legend
