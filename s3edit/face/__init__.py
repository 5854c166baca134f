"""Faces in frames: detection + 68 landmarks (``detect``), landmark index sets
(``landmarks``), one-face tracking (``track``), FFHQ alignment (``align``), the face and
edit-region masks (``mask``), identity nets (``identity`` over the interface in
``identity_base``; dlib's ResNet in torch: ``dlib_resnet``, its weight-file reader
``dlib_dat``) and contact-sheet previews (``preview``). Import submodules directly."""
