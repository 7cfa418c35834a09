from marco_trainer.cli import entrypoint

entrypoint()
