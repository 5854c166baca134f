"""Training a weight set: the crop loader (``data``), the edit-pairs files the paired
term reads (``pairs``) and the training loop with DVA's objective (``loop``). Import
submodules directly."""
