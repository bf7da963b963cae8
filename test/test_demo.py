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


def test_person_outlines_take_each_persons_colour_along_its_edge_only():
    picture = np.zeros((40, 60, 3), np.uint8)
    instances = np.zeros((40, 60), np.uint8)
    instances[20:38, 5:20], instances[20:38, 30:50] = 1, 2
    out = render.outline_persons(picture, instances, [(1, 7, (5, 20, 19, 37)), (2, 3, (30, 20, 49, 37))])
    assert tuple(out[30, 5]) == render.person_colour(7) and tuple(out[30, 49]) == render.person_colour(3)
    assert (out[28:30, 10:15] == 0).all()  # inside a person: untouched
    assert tuple(out[10, 8]) == render.person_colour(7)  # the "#7" tag above the box
    assert (out[39, 55] == 0).all()


def test_the_demo_outlines_each_person_with_multi_person_weights(tmp_path, capsys):
    pytest.importorskip("rclpy")
    from person_weights import make_person_weights

    from human_parsing_ros.messages import PersonsMessage
    from human_parsing_ros.tools import demo

    weights = make_person_weights(tmp_path / "persons.safetensors")
    with pytest.raises(SystemExit) as exit_code:
        demo.main(["--out", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu", "--loops", "1"])
    assert exit_code.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("multi-person weights: persons per frame") for line in lines)
    records = sorted((tmp_path / "out").glob("persons_*+*.json"))  # frames are pairs of photos
    assert records
    persons = PersonsMessage.from_json(records[-1].read_text()).persons
    assert persons
    overlay = np.asarray(Image.open(tmp_path / "out" / f"overlay_{records[-1].stem[len('persons_'):]}.png"))
    colours = {tuple(c) for c in overlay.reshape(-1, 3).tolist()}
    assert all(render.person_colour(p.id) in colours for p in persons)
