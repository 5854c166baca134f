"""The weights' lifecycle: the registry of named sets (``registry``), the weight-set
format on disk (``weightset``), hub downloads and ``verify`` (``download``), the
import of DVA's published checkpoint (``importer``). Import submodules directly."""
