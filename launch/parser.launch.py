"""Start the human parser: ros2 launch human_parsing_ros parser.launch.py image_topic:=/camera/image_raw"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def _parser_node(context):
    # weights/device given on the command line win over the parameter file; empty = keep the file's value.
    overrides = {name: LaunchConfiguration(name).perform(context) for name in ("weights", "device")}
    overrides = {name: value for name, value in overrides.items() if value}
    remappings = [("image", LaunchConfiguration("image_topic").perform(context))]  # and <image_topic>/compressed
    depth = LaunchConfiguration("depth_topic").perform(context)
    if depth:  # an aligned depth image and its camera_info beside it (realsense: aligned_depth_to_color/...)
        info = LaunchConfiguration("depth_info_topic").perform(context) or f"{depth.rsplit('/', 1)[0]}/camera_info"
        remappings += [("depth", depth), ("depth/camera_info", info)]
        overrides["depth_input"] = True
    return [Node(
        package="human_parsing_ros",
        executable="parser_node",
        name="human_parser",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
    )]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("human_parsing_ros"), "config", "parser.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="Camera topic (and its /compressed sub-topic with input_transport "
                                          "compressed)"),
        DeclareLaunchArgument("weights", default_value="",
                              description="Weights file (.safetensors); empty = the parameter file's value"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto | cpu | cuda | cuda:N; empty = the parameter file's value"),
        DeclareLaunchArgument("depth_topic", default_value="",
                              description="Depth image registered to the camera (16UC1 mm or 32FC1 m); set: "
                                          "depth_input on, 3D per part and person; empty = the parameter file's"),
        DeclareLaunchArgument("depth_info_topic", default_value="",
                              description="The depth image's CameraInfo; empty = camera_info beside depth_topic"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="Parameter file"),
        DeclareLaunchArgument("namespace", default_value="/human_parsing", description="Namespace of the node"),
        OpaqueFunction(function=_parser_node),
    ])
