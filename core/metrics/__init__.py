"""Metrics: classification and calibration metrics on (labels, P(FAKE)) arrays (metrics) and the small
statistics of the audit tools, intervals and paired tests (stats). Nothing is imported here eagerly.
"""
