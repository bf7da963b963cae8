"""Test helper, never imported by the package: copied as ``sitecustomize.py`` into a directory on a node
process's PYTHONPATH, it makes that process's HumanParser.forward sleep HP_TEST_FORWARD_DELAY_S seconds per call
(a CPU shared with heavier work), so a test can watch the real node fall behind its camera.

It imports nothing heavy at start-up (the node blocks its stop signals before torch starts a thread): it
waits for human_parsing_ros.parser to be imported and wraps the method then.
"""
import importlib.abc
import importlib.util
import os
import sys
import time

DELAY_S = float(os.environ.get("HP_TEST_FORWARD_DELAY_S", "0"))
TARGET = "human_parsing_ros.parser"


class _SlowForward(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # find the real module, once
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            forward = module.HumanParser.forward

            def slow_forward(self, *args, **kwargs):
                time.sleep(DELAY_S)
                return forward(self, *args, **kwargs)

            module.HumanParser.forward = slow_forward

        spec.loader.exec_module = exec_module
        return spec


if DELAY_S > 0:
    sys.meta_path.insert(0, _SlowForward())
