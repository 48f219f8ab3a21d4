"""The report: the one-file HTML audit report (report), model cards generated from checkpoints and fresh
evaluations (cards), static PNG figures drawn with Pillow (figures) and the atomic on-disk results of the audit
tools under runs/ (audit_cache). Nothing is imported here eagerly.
"""
