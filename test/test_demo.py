"""The demo end to end over DDS, and the pictures it writes: overlays with a legend and one contact sheet."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from human_parsing_ros import render
from human_parsing_ros.class_sets import get_class_set

ROOT = Path(__file__).resolve().parent.parent


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


def dark_runs(strip: np.ndarray) -> list[int]:
    """Heights of the bands of rows holding dark (text or outline) pixels in a legend strip, top to bottom."""
    dark = (strip.max(axis=2) < 100).any(axis=1)
    runs, length = [], 0
    for row in dark.tolist() + [False]:
        if row:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    return runs


def test_legend_text_in_the_contact_sheet_is_drawn_at_the_sheets_scale():
    hri = get_class_set("hri")
    labels = np.zeros((900, 600), np.uint8)
    labels[100:800, 100:500] = hri.index("upper-clothes")
    photo = np.full((900, 600, 3), 128, np.uint8)  # a tall photo, shrunk to 360 rows in the sheet
    legend = render.Legend.of(labels, hri.names, hri.palette)
    assert legend.entries == (("upper-clothes", tuple(hri.palette[hri.index("upper-clothes")].tolist())),)
    sheet = render.contact_sheet([photo], height=360, legends=[legend])
    assert sheet.shape[0] == 360 and (sheet[:, :240] == 128).all()
    runs = dark_runs(sheet[:, 240:])  # "classes", then the swatch and "upper-clothes"
    assert len(runs) == 2 and min(runs) >= 11, runs  # text at least 11 px high where the sheet is shown
    assert render.legend_font_size(360) == 16 and render.legend_font_size(100) == 11


def test_a_long_legend_fits_beside_its_picture_in_columns():
    hri = get_class_set("hri")
    labels = np.arange(11, dtype=np.uint8).repeat(10).reshape(11, 10)
    picture = np.zeros((110, 10, 3), np.uint8)
    out = render.with_legend(picture, labels, hri.names, hri.palette)
    assert out.shape[0] == 110  # ten classes of 14-pixel rows do not fit in one column of 110 rows
    colours = {tuple(c) for c in out[:, 10:].reshape(-1, 3).tolist()}
    assert all(tuple(hri.palette[c].tolist()) in colours for c in range(1, 11))


def test_the_readme_picture_is_drawn_from_the_default_weights(tmp_path):
    from human_parsing_ros.tools import demo

    path = demo.example_picture(tmp_path / "example.jpg")
    picture = np.asarray(Image.open(path).convert("RGB"))
    assert picture.shape[0] == 300 and picture.shape[1] > 3 * 400 and path.stat().st_size < 200_000
    assert (ROOT / "docs" / "images" / "parsing_example.jpg").stat().st_size < 200_000


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

    from human_parsing_ros.tools import demo

    weights = make_person_weights(tmp_path / "persons.safetensors")
    with pytest.raises(SystemExit) as exit_code:
        demo.main(["--out", str(tmp_path / "out"), "--weights", str(weights), "--device", "cpu", "--loops", "1"])
    assert exit_code.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("multi-person weights: persons per frame") for line in lines)
    records = sorted((tmp_path / "out").glob("persons_*+*.json"))  # frames are pairs of photos
    assert records
    persons = json.loads(records[-1].read_text())["persons"]
    assert persons and all(p["parts"] and p["bbox"] for p in persons)
    overlay = np.asarray(Image.open(tmp_path / "out" / f"overlay_{records[-1].stem[len('persons_'):]}.png"))
    colours = {tuple(c) for c in overlay.reshape(-1, 3).tolist()}
    assert all(render.person_colour(p["id"]) in colours for p in persons)
