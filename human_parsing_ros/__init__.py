"""human_parsing_ros: human parsing for ROS 2.

The ROS-free core (``class_sets``, ``models``, ``weights``, ``parser``,
``image_codec``, ``messages``) imports without rclpy; ``node`` is the ROS 2 adapter.
"""

__version__ = "0.1.0"
