"""Teacher families: one file each. They register themselves in ``samdistill.models.zoo.MODELS``."""
