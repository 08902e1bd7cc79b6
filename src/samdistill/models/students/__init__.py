"""Student families. Promptable students (``promptable.py``) register themselves in ``models.zoo.MODELS``."""
