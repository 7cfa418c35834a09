"""Target-profile-driven augmentation (paper §3): measure, filter, augment.

Modules, one job each: ``io`` (reading with reasons), ``features`` (per-file
metrics), ``profile`` (aggregation and shard merge), ``ops`` (pure operators),
``params`` (drawing per-utterance parameters), ``chain`` (Eq. 3), ``telephony``
(the Covo-DA preset), ``filtering``, ``match`` (profile-match report) and the
CLI modules ``cli_profile``, ``cli_augment``, ``cli_filter``, ``cli_profile_report``.
"""
