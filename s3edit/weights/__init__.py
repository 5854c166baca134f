"""The weights' lifecycle: the registry of named sets (``registry``), the weight-set
format on disk (``weightset``), loading a set for a run (``load``), hub downloads
(``download``), the import of DVA's published checkpoint (``importer``), ``verify``,
and the sha256 they share (``hashing``). Import submodules directly."""
