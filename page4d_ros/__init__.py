"""page4d_ros: PAGE-4D / VGGT multi-view geometry for ROS 2 robots.

Layers (data flows one way): ``ros`` -> ``pipeline`` -> ``model``. ``synthetic``, ``evaluation``,
``training`` and ``tools`` sit beside the pipeline and reuse it. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
