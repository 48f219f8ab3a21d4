"""Inference: per-image predictions and metrics of a checkpoint on a dataset, cached on disk (evaluate,
`python -m core evaluate`), P(FAKE) for image files, folders and zips (predict, `python -m core predict`), and the
threads that run torch on one intra-op thread each (threads). Nothing is imported here eagerly.
"""
