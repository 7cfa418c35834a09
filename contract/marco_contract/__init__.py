"""The contract between the marco-asr operator and its trainer.

Both packages import it; it imports neither. It holds what crosses a process
boundary: the data manifests (`manifests`), the directive, evaluation history
and stage results (`formats`), the status a run reports (`status`), where a
run's files are on the volume (`layout`), and how they are written (`files`).
Pure pydantic and the standard library: the operator image carries it without
torch.
"""
