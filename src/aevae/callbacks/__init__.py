"""Lightning callbacks (the `callbacks` config group)."""

from aevae.callbacks.timer import EpochTimer

__all__ = ["EpochTimer"]
