"""The DVA network (``dva``, ``unet`` and the encoders), its configs (``config``), the
attribute heads and DVA's edit rule (``attributes``) and the DDIM sampler (``ddim``).
Import submodules directly; this package imports nothing heavy."""
