"""Faces in frames: detection + 68 landmarks (``detect``), landmark index sets
(``landmarks``), one-face tracking (``track``), FFHQ alignment (``align``), contact-sheet
previews (``preview``), and the other per-face helpers of later stages."""
