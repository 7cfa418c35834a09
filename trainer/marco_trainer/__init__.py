"""marco-asr data plane: audio profiling and augmentation, evaluation, training.

Importing this package must stay cheap and torch-free: the operator imports
``marco_trainer.contract`` for the formats it shares with the trainer.
"""

__version__ = "0.1.0"
