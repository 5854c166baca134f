"""Training a weight set (docs/training.md): the crop loader (``data``), the edit-pairs
files (``pairs``), the generic training loop (``loop``) and DVA's objective with the
paired-edit and keep terms (``objective``). Import submodules directly."""
