"""human_parsing_ros: human parsing for ROS 2.

The ROS-free core (``class_sets``, ``models``, ``weights``, ``parser``,
``image_codec``, ``messages`` ...: everything outside ``ros``) imports without rclpy
and never imports ``ros``, the ROS 2 wing (the node and its process).
"""

__version__ = "0.1.0"
