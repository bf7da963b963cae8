"""The typed messages of ``human_parsing_msgs`` to and from the ROS-free views of ``human_parsing_ros.messages``.

The node publishes ``human_parsing_msgs/Parts``, ``Persons`` and ``ClassInfo``; a Python behaviour may read
the generated types directly, or turn them into the views (``parts_from_msg(msg).get("face").present``).
A box is a ``sensor_msgs/RegionOfInterest`` on the wire (all zero: no pixel) and an inclusive
(x_min, y_min, x_max, y_max) in the views; a location is ``has_location`` + ``Location`` on the wire and
``Position3D`` or None in the views.
"""
from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

try:
    from human_parsing_msgs.msg import ClassInfo, Location, Part, Parts, Person, Persons
except ImportError as error:  # the one place the node needs it first: say how to get it
    raise ImportError("human_parsing_msgs (the node's typed messages) is not installed: build it with "
                      "`pip install --no-build-isolation ./human_parsing_msgs` or colcon (README, Install)") from error

from .. import messages, presence
from ..presence import Box, Position3D


def roi(box: Box | None) -> RegionOfInterest:
    """An inclusive box as a RegionOfInterest; None (no pixel) as all zero."""
    if box is None:
        return RegionOfInterest()
    x0, y0, x1, y1 = (int(v) for v in box)
    return RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0 + 1, height=y1 - y0 + 1)


def box_of(region: RegionOfInterest) -> Box | None:
    """The inclusive box of a RegionOfInterest; None for an empty one."""
    if region.width == 0 or region.height == 0:
        return None
    return (region.x_offset, region.y_offset, region.x_offset + region.width - 1,
            region.y_offset + region.height - 1)


def location_msg(location: Position3D | None) -> tuple[bool, Location]:
    """(has_location, Location) of a view's location."""
    if location is None:
        return False, Location()
    return True, Location(position=Point(x=float(location.position[0]), y=float(location.position[1]),
                                         z=float(location.position[2])),
                          extent=Vector3(x=float(location.extent[0]), y=float(location.extent[1]),
                                         z=float(location.extent[2])),
                          valid_pixels=int(location.valid_pixels))


def location_of(has_location: bool, location: Location) -> Position3D | None:
    if not has_location:
        return None
    position, extent = location.position, location.extent
    return Position3D((position.x, position.y, position.z), (extent.x, extent.y, extent.z),
                      int(location.valid_pixels))


def part_msg(part: presence.Part) -> Part:
    has_location, location = location_msg(part.location)
    return Part(id=int(part.id), name=part.name, present=bool(part.present), pixel_fraction=float(part.pixel_fraction),
                mean_confidence=float(part.mean_confidence), bbox=roi(part.bbox),
                bbox_full=roi(part.bbox_full if part.bbox_full is not None else part.bbox),
                has_location=has_location, location=location)


def part_of(msg: Part) -> presence.Part:
    return presence.Part(int(msg.id), msg.name, bool(msg.present), float(msg.pixel_fraction), box_of(msg.bbox),
                         float(msg.mean_confidence), box_of(msg.bbox_full), location_of(msg.has_location, msg.location))


def header_msg(stamp: messages.Stamp, frame_id: str) -> Header:
    return Header(stamp=Time(sec=int(stamp.sec), nanosec=int(stamp.nanosec)), frame_id=frame_id)


def _stamp_of(header: Header) -> messages.Stamp:
    return messages.Stamp(int(header.stamp.sec), int(header.stamp.nanosec))


def parts_msg(view: messages.PartsMessage) -> Parts:
    """The ``parts`` message of a frame's view."""
    return Parts(header=header_msg(view.stamp, view.frame_id), width=view.width, height=view.height,
                 presence_threshold=float(view.threshold), depth_frame_id=view.depth_frame_id,
                 parts=[part_msg(part) for part in view.parts])


def parts_from_msg(msg: Parts) -> messages.PartsMessage:
    """The view of a received ``parts`` message."""
    return messages.PartsMessage(_stamp_of(msg.header), msg.header.frame_id, int(msg.width), int(msg.height),
                                 float(msg.presence_threshold), tuple(part_of(part) for part in msg.parts),
                                 msg.depth_frame_id)


def persons_msg(view: messages.PersonsMessage) -> Persons:
    """The ``persons`` message of a frame's view."""
    people = []
    for person in view.persons:
        has_location, location = location_msg(person.location)
        people.append(Person(id=int(person.id), instance=int(person.instance), score=float(person.score),
                             bbox=roi(person.bbox), pixel_fraction=float(person.pixel_fraction),
                             has_location=has_location, location=location,
                             parts=[part_msg(part) for part in person.parts]))
    return Persons(header=header_msg(view.stamp, view.frame_id), width=view.width, height=view.height,
                   presence_threshold=float(view.threshold), dropped=int(view.dropped),
                   depth_frame_id=view.depth_frame_id, persons=people)


def persons_from_msg(msg: Persons) -> messages.PersonsMessage:
    """The view of a received ``persons`` message."""
    people = tuple(messages.Person(int(p.id), int(p.instance), float(p.score), box_of(p.bbox), float(p.pixel_fraction),
                                   tuple(part_of(part) for part in p.parts), location_of(p.has_location, p.location))
                   for p in msg.persons)
    return messages.PersonsMessage(_stamp_of(msg.header), msg.header.frame_id, int(msg.width), int(msg.height),
                                   float(msg.presence_threshold), int(msg.dropped), people, msg.depth_frame_id)


def class_info_msg(view: messages.ClassInfoMessage, header: Header) -> ClassInfo:
    """The ``class_info`` message of the loaded weights; ``header``: the configure's time."""
    return ClassInfo(header=header, class_set=view.class_set, names=list(view.names),
                     palette=[int(c) for colour in view.palette for c in colour],
                     flip_pairs=[int(i) for pair in view.flip_pairs for i in pair],
                     architecture=view.architecture, weights=view.weights, untrained=bool(view.untrained),
                     backend=view.backend, precision=view.precision)


def class_info_from_msg(msg: ClassInfo) -> messages.ClassInfoMessage:
    """The view of a received ``class_info`` message."""
    palette, pairs = list(msg.palette), list(msg.flip_pairs)
    return messages.ClassInfoMessage(
        msg.class_set, tuple(msg.names), tuple(tuple(palette[i:i + 3]) for i in range(0, len(palette), 3)),
        tuple(tuple(pairs[i:i + 2]) for i in range(0, len(pairs), 2)), msg.architecture, msg.weights,
        bool(msg.untrained), msg.backend, msg.precision)


