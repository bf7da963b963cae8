"""The ROS 2 wing: the ``human_parser`` lifecycle node and its process. Everything that imports rclpy lives
here; the core (the rest of ``human_parsing_ros``) never imports this package.

Importing this package imports nothing: ``parameters`` and ``rcl_values`` work without ROS.
"""
