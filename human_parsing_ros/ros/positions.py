"""Where tracked persons are, for ROS tools (with depth input): a ``geometry_msgs/PointStamped`` per person on
``bodies/person_<id>/position`` (as REP-155's ``/humans/bodies/<id>/position``; the person's median back-projected
pixel, not the torso's) and an RViz ``visualization_msgs/MarkerArray`` on ``markers`` (a box of each person's
5-95% extent and its id, computed only while subscribed)."""
from __future__ import annotations

from typing import Any

from geometry_msgs.msg import Point, PointStamped
from std_msgs.msg import Header

from ..presence import Position3D

# A person's position topic outlives the person by this many frames: a track that flickers out for a frame
# keeps its publisher (creating DDS endpoints every frame would cost more than the message)
GRACE_FRAMES = 30
MARKER_LIFETIME_NS = 500_000_000  # markers vanish half a second after the last frame that drew them


class PersonPositions:
    """Publishers per tracked id, created on a person's first location and removed ``GRACE_FRAMES`` after its
    last; the marker publisher is the node's (``markers``), or None where visualization_msgs is missing."""

    def __init__(self, node: Any, markers_pub: Any | None) -> None:
        self._node = node
        self.markers_pub = markers_pub
        self._pubs: dict[int, list] = {}  # id -> [publisher, frames since last seen]

    def publish(self, header: Any, frame_id: str, located: list[tuple[int, Position3D]]) -> None:
        """Positions of the persons ``located`` this frame (none when the frame had no depth: the grace
        period of every publisher still runs)."""
        stamped = Header(stamp=header.stamp, frame_id=frame_id)
        seen = set()
        for person_id, location in located:
            seen.add(person_id)
            entry = self._pubs.get(person_id)
            if entry is None:
                entry = self._pubs[person_id] = [self._node.create_publisher(
                    PointStamped, f"bodies/person_{person_id}/position", 10), 0]
            entry[1] = 0
            x, y, z = location.position
            entry[0].publish(PointStamped(header=stamped, point=Point(x=x, y=y, z=z)))
        for person_id in [i for i in self._pubs if i not in seen]:
            self._pubs[person_id][1] += 1
            if self._pubs[person_id][1] > GRACE_FRAMES:
                self._node.destroy_publisher(self._pubs.pop(person_id)[0])
        if located and self.markers_pub is not None and self.markers_pub.get_subscription_count():
            self.markers_pub.publish(markers(stamped, located))

    def close(self) -> None:
        for publisher, _ in self._pubs.values():
            self._node.destroy_publisher(publisher)
        self._pubs = {}


def markers(header: Header, located: list[tuple[int, Position3D]]) -> Any:
    """A box (the 5-95% extent, at least 5 cm a side) and a text label per person."""
    from builtin_interfaces.msg import Duration
    from visualization_msgs.msg import Marker, MarkerArray

    lifetime = Duration(sec=0, nanosec=MARKER_LIFETIME_NS)
    out = []
    for person_id, location in located:
        x, y, z = location.position
        box = Marker(header=header, ns="human_parsing/persons", id=person_id, type=Marker.CUBE, action=Marker.ADD,
                     lifetime=lifetime)
        box.pose.position = Point(x=x, y=y, z=z)
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (max(0.05, v) for v in location.extent)
        box.color.r, box.color.g, box.color.b, box.color.a = 0.1, 0.6, 1.0, 0.4
        label = Marker(header=header, ns="human_parsing/person_ids", id=person_id, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, lifetime=lifetime, text=f"person {person_id}")
        label.pose.position = Point(x=x, y=y - location.extent[1] / 2 - 0.1, z=z)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.15
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        out += [box, label]
    return MarkerArray(markers=out)
