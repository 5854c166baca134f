"""The default model's training data, made from the openly licensed portrait
collection: portraits aligned into job folders (``prepare``), synthetic eyeglasses drawn
from landmarks (``glasses``) and attribute heads fitted in an identity space
(``heads``). Scripts: ``scripts/prepare_faces.py``, ``scripts/fit_heads.py``,
``scripts/glasses_job.py``; the recipe is ``weights/default/TRAINING.md``."""
