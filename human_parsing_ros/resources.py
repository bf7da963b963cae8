"""Where the package's own files are: bundled weights, sample photos, and the files installed under share/.

The one place that knows the layout of ``data/`` and of ``share/human_parsing_ros``;
everything else asks here.
"""
from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

PACKAGE = "human_parsing_ros"
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_WEIGHTS = DATA / "weights" / "default.safetensors"  # the hri class set
CCP59_WEIGHTS = DATA / "weights" / "ccp59_dtpr.safetensors"  # CCP's 59 classes: the DTPR study's shipped run
PERSONS_WEIGHTS = DATA / "weights" / "persons_rprcnn.safetensors"  # hri, per person: RP R-CNN on CCP composites
SAMPLES = DATA / "ccp"  # seven CCP photos with annotations (Apache-2.0; see its NOTICE.md)
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def resolve_weights_path(spec: str | os.PathLike) -> Path:
    """``spec`` if given, else the default weights installed with the package."""
    from .weights import WeightsError

    if str(spec):
        path = Path(spec).expanduser()
        if path.is_dir():
            raise WeightsError(f"{path}: is a directory, not a weights file (pass weights:=<file.safetensors>)")
        return path
    if DEFAULT_WEIGHTS.is_file():
        return DEFAULT_WEIGHTS
    raise WeightsError(
        f"{DEFAULT_WEIGHTS}: no default weights are installed; pass weights:=<file.safetensors> "
        "(train one with training/train.py, or make an untrained test file with human_parsing_random_weights)")


def share_file(*parts: str) -> Path:
    """A file installed under share/human_parsing_ros (colcon through ament's index; pip under the environment's
    prefix), or the same file in the source tree (pip -e)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            installed = Path(get_package_share_directory(PACKAGE), *parts)
            if installed.exists():
                return installed
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH (pip install)
            pass
    except ImportError:
        pass
    # the source tree first: an editable install runs from it, a plain one (site-packages) has no config/ there;
    # then where pip puts data files: the environment's prefix, the platform's scheme (Debian: /usr/local),
    # the user's (pip install --user)
    prefixes = (sys.prefix, sysconfig.get_path("data"), sysconfig.get_path("data", f"{os.name}_user"))
    for candidate in (_SOURCE_ROOT.joinpath(*parts), *(Path(prefix, "share", PACKAGE, *parts) for prefix in prefixes)):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{'/'.join(parts)} is neither installed (share/{PACKAGE}) nor in the source tree")
