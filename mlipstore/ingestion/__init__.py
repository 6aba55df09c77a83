"""Ingestion: DFT output files -> checked configurations -> one store transaction.

``formats`` (one record per format: detection, completeness of a run, reading),
``extxyz`` (the fast extxyz reader) and ``ingest`` (reading in parallel, deduplicating,
committing, with every rejected frame reported). Imports only from ``store``.
"""
