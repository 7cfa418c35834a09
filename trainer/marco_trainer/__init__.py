"""marco-asr data plane: audio profiling and augmentation, evaluation, training.

Importing this package must stay cheap and torch-free: `marco-trainer --help`
answers without loading torch. The formats it shares with the operator are in
``marco_contract``.
"""

__version__ = "0.1.0"
