"""Training data for the default model (issue 6): aligning still portraits
(``portraits``), synthetic eyeglasses drawn from landmarks (``glasses``) and attribute
heads fitted in an identity space (``heads``). Scripts: ``scripts/prepare_faces.py``,
``scripts/fit_heads.py``; the recipe is ``weights/default/TRAINING.md``."""
