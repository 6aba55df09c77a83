"""The store: DFT configurations as immutable Parquet shards, once each.

``configuration`` (one DFT configuration, checked), ``identity`` (its content id),
``codec`` (the Arrow schema with units, configurations <-> Arrow), ``shards`` (names and
writer), ``filters`` (``ScanFilter``, pushed into Parquet), ``store`` (``Store``: atomic
transactions, verify, compact, migrate) and ``versions`` (the store at a git revision,
through DVC; differences between revisions). Imports nothing from the layers above.
"""
