"""Per-frame memory grows with the frame's pixels, not with its height or width (#35): an 8M x 1 frame through
HumanParser.parse(...).presence() once peaked at 10.6 GB, an (8M x network width) float intermediate."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import human_parsing_ros

# Runs in its own process: peak RSS (getrusage) is a per-process high-water mark. The address space is capped
# a few GB above what the loaded parser uses, so that a regression fails here instead of filling the machine.
MEASURE = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from human_parsing_ros.parser import HumanParser
    from human_parsing_ros.resources import DEFAULT_WEIGHTS

    height, width, headroom_gb = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    parser = HumanParser(DEFAULT_WEIGHTS, device="cpu")
    parser.warmup()
    with open("/proc/self/status") as status:
        vm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    cap = vm_kb * 1024 + int(headroom_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = parser.parse(np.zeros((height, width, 3), np.uint8))
    parts = result.presence(0.005)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (after - before) / 1024, "shape": list(result.labels.shape),
                      "pixels": sum(int(c) for c in result.statistics.pixel_counts), "parts": len(parts)}))
""")


@pytest.mark.parametrize("height, width", [(8_000_000, 1)])
def test_a_one_pixel_wide_frame_of_8m_pixels_parses_within_a_bounded_peak(height, width, tmp_path):
    # the package this test imported, not whatever the working directory holds
    source = os.path.dirname(os.path.dirname(human_parsing_ros.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(height), str(width), "6"], capture_output=True,
                          text=True, timeout=1800, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["shape"] == [height, width] and row["pixels"] == height * width
    assert row["growth_mb"] < 3 * 1024, row  # about 0.5 GB now; 10.6 GB before
