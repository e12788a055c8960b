"""`fptplus demo`: the built-in default task and pipeline (see `fptplus.demo.run`)."""

from .data import RetinaTask, build_dataset
from .run import DemoConfig, run_demo

__all__ = ["DemoConfig", "RetinaTask", "build_dataset", "run_demo"]
