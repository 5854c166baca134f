"""The DVA network (``dva``, ``unet`` and the encoders), its configs (``config``),
weight sets on disk (``weightset``) and the import of DVA's published checkpoint
(``importer``). Import submodules directly; this package imports nothing heavy."""
