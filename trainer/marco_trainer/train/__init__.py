"""The training stage: loop, checkpoints, directives, distributed plumbing."""
