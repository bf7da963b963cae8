"""3D from depth: known geometry (a plane at 2.000 m, a person's mask over it) against the back-projection by hand."""
from __future__ import annotations

import numpy as np
import pytest

from human_parsing_ros.depth import DepthError, Intrinsics, depth_in_metres, locate_labels

COLOUR = Intrinsics(600.0, 600.0, 319.5, 239.5, 640, 480)
TOP, BOTTOM, LEFT, RIGHT = 100, 400, 250, 390  # the person's box (inclusive), colour pixels
PERSON, HAND = 3, 7


def scene() -> np.ndarray:
    labels = np.zeros((480, 640), np.uint8)
    labels[TOP:BOTTOM + 1, LEFT:RIGHT + 1] = PERSON
    labels[300:321, 380:391] = HAND  # a hand at the person's right edge
    return labels


def by_hand(rows: np.ndarray, columns: np.ndarray, z: float, camera: Intrinsics) -> tuple[float, float]:
    """x, y of the median pixel of a rectangle at depth z, written out from the pinhole model."""
    return (float(np.median(columns)) - camera.cx) / camera.fx * z, (float(np.median(rows)) - camera.cy) / camera.fy * z


@pytest.mark.parametrize("encoding,plane", [("16UC1", np.uint16(2000)), ("32FC1", np.float32(2.0))])
def test_a_plane_at_two_metres_gives_the_hand_computed_positions(encoding, plane):
    depth = depth_in_metres(np.full((480, 640), plane), encoding, 0.1, 10.0)
    found = locate_labels(scene(), [PERSON, HAND, 9], depth, COLOUR, COLOUR)
    assert set(found) == {PERSON, HAND}  # class 9 is nowhere
    rows, columns = np.nonzero(scene() == PERSON)
    x, y = by_hand(rows, columns, 2.0, COLOUR)
    person = found[PERSON]
    assert person.position == pytest.approx((x, y, 2.0), abs=0.01)
    assert person.valid_pixels == len(rows)
    assert person.extent[2] == pytest.approx(0.0, abs=1e-6)  # a plane: no depth spread
    assert person.extent[0] == pytest.approx(0.9 * (RIGHT - LEFT) / 600 * 2.0, rel=0.02)  # 5th-95th percentile
    hand = found[HAND]
    assert hand.position == pytest.approx((((380 + 390) / 2 - 319.5) / 600 * 2, ((300 + 320) / 2 - 239.5) / 600 * 2,
                                           2.0), abs=0.01)


def test_depth_at_half_the_colour_resolution_maps_through_both_intrinsics():
    half = Intrinsics(300.0, 300.0, 159.75, 119.75, 320, 240)  # the same optics, half the pixels
    depth = depth_in_metres(np.full((240, 320), 2000, np.uint16), "16UC1", 0.1, 10.0)
    person = locate_labels(scene(), [PERSON], depth, COLOUR, half)[PERSON]
    rows, columns = np.nonzero(scene() == PERSON)
    x, y = by_hand(rows, columns, 2.0, COLOUR)
    assert person.position == pytest.approx((x, y, 2.0), abs=0.01)
    assert abs(person.valid_pixels - len(rows) / 4) < 0.05 * len(rows) / 4  # a quarter of the pixels


def test_invalid_depth_never_enters_a_figure():
    raw = np.full((480, 640), 2.0, np.float32)
    raw[TOP:TOP + 40, LEFT:RIGHT + 1] = 0.0  # no reading
    raw[TOP + 40:TOP + 60, LEFT:RIGHT + 1] = np.nan
    raw[TOP + 60:TOP + 70, LEFT:RIGHT + 1] = np.inf
    raw[TOP + 70:TOP + 80, LEFT:RIGHT + 1] = 50.0  # beyond max_depth
    raw[300:321, 380:391] = 0.0  # the whole hand unreadable
    depth = depth_in_metres(raw, "32FC1", 0.1, 10.0)
    found = locate_labels(scene(), [PERSON, HAND], depth, COLOUR, COLOUR)
    assert HAND not in found  # no valid pixel: no position rather than a wrong one
    person = found[PERSON]
    assert person.position[2] == pytest.approx(2.0, abs=1e-6) and person.extent[2] == pytest.approx(0.0, abs=1e-6)
    assert person.valid_pixels == int((scene() == PERSON).sum()) - 80 * (RIGHT - LEFT + 1)


def test_background_leaking_in_at_the_edges_does_not_move_the_median():
    raw = np.full((480, 640), 2000, np.uint16)
    raw[:, RIGHT - 9:] = 5000  # the wall behind, seen through the mask's last ten columns
    person = locate_labels(scene(), [PERSON], depth_in_metres(raw, "16UC1", 0.1, 10.0), COLOUR, COLOUR)[PERSON]
    assert person.position[2] == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("k,expected", [([0.0] * 9, "no usable focal length"), ([600, 0, 320, 0, 0, 240, 0, 0, 1],
                                                                                    "no usable focal length"),
                                        ([1.0] * 4, "K must have 9 values")])
def test_a_camera_info_without_a_usable_k_is_refused_in_one_line(k, expected):
    with pytest.raises(DepthError) as err:
        Intrinsics.from_k(k, 640, 480, "/camera/depth/camera_info")
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("/camera/depth/camera_info: ")


def test_unknown_encodings_and_mismatched_sizes_are_refused():
    with pytest.raises(DepthError, match="REP-118"):
        depth_in_metres(np.zeros((4, 4), np.uint8), "mono8", 0.1, 10.0)
    with pytest.raises(DepthError, match="camera_info says 320x240"):
        locate_labels(scene(), [PERSON], np.zeros((480, 640), np.float32), COLOUR,
                      Intrinsics(300.0, 300.0, 160.0, 120.0, 320, 240))


def test_intrinsics_scale_with_the_image():
    scaled = COLOUR.scaled_to(320, 240)
    assert (scaled.fx, scaled.fy, scaled.cx, scaled.cy) == pytest.approx((300.0, 300.0, 159.5, 119.5))
    back = scaled.scaled_to(640, 480)
    assert (back.fx, back.fy, back.cx, back.cy, back.width, back.height) == pytest.approx(
        (COLOUR.fx, COLOUR.fy, COLOUR.cx, COLOUR.cy, 640, 480))


def test_locations_are_rounded_to_millimetres_for_the_wire_and_only_where_there_is_a_reading():
    from human_parsing_ros.depth import with_locations
    from human_parsing_ros.messages import PartsMessage, PersonsMessage, Stamp
    from human_parsing_ros.presence import Part, PersonDetection, Position3D

    located = Position3D((0.0123456, -0.5, 2.0004), (0.3, 0.9, 0.0), 1234)
    parts = with_locations([Part(3, "hair", True, 0.1, (1, 2, 3, 4), 0.9), Part(4, "face", False, 0.0, None, 0.0)],
                           {3: located})
    message = PartsMessage.from_parts(parts, Stamp(1, 2), "camera_color_optical_frame", 64, 48, 0.005,
                                      "camera_depth_optical_frame")
    assert message.depth_frame_id == "camera_depth_optical_frame"
    assert message.get("hair").location == Position3D((0.012, -0.5, 2.0), (0.3, 0.9, 0.0), 1234)
    assert message.get("face").location is None  # no reading: no location rather than a made-up one
    assert PartsMessage.from_parts(parts[1:], Stamp(1, 2), "f", 64, 48, 0.005).depth_frame_id == ""
    persons = PersonsMessage.from_persons([(7, PersonDetection(1, 0.9, (1, 2, 30, 40), 500), parts)], Stamp(1, 2),
                                          "f", 64, 48, 0.005, 0, {1: located}, "d")
    assert persons.get(7).location == located.rounded() and persons.depth_frame_id == "d"


def test_pairing_takes_the_same_stamp_then_the_nearest_within_the_tolerance_and_counts():
    from human_parsing_ros.depth import DepthPairing

    pairing = DepthPairing(keep=3)
    for stamp in (1_000, 2_000, 3_000, 4_000):  # keeps the newest three
        pairing.add(stamp, f"depth@{stamp}")
    assert pairing.pair(3_000, 10) == "depth@3000"  # exact, though 2_000 and 4_000 are within reach
    assert pairing.pair(3_900, 200) == "depth@4000"  # nearest within the tolerance
    assert pairing.pair(1_000, 500) is None  # dropped from the buffer, and 2_000 is too far
    assert pairing.pair(9_000, 500) is None
    assert (pairing.exact, pairing.nearest, pairing.unpaired) == (1, 1, 2)
    pairing.clear()
    assert pairing.pair(3_000, 10) is None and pairing.last_received is None


def test_unregistered_depth_and_an_empty_depth_range_are_refused_in_one_line():
    from human_parsing_ros.depth import check_registered

    check_registered(Intrinsics(300.0, 300.0, 159.5, 119.5, 320, 240), (480, 640))  # same view, half size
    with pytest.raises(DepthError) as err:
        check_registered(Intrinsics(300.0, 300.0, 159.5, 119.5, 320, 240), (720, 1280))  # 4:3 depth, 16:9 colour
    assert "aspect ratio" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DepthError, match="min_depth 5 must be below max_depth 2"):
        depth_in_metres(np.full((4, 4), 2000, np.uint16), "16UC1", 5.0, 2.0)


def test_pairing_keeps_a_second_of_depth_whatever_the_rate():
    from human_parsing_ros.depth import DepthPairing

    pairing = DepthPairing()
    for k in range(90):  # three seconds at 30 Hz
        pairing.add(k * 33_333_333, k)
    assert pairing.pair(60 * 33_333_333, 0) == 60  # 1 s old: kept
    assert pairing.pair(55 * 33_333_333, 1_000_000) is None  # older than a second: gone
