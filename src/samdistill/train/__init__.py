"""The one training loop (``trainer.py``) and its atomic, resumable checkpoints (``checkpoint.py``)."""
