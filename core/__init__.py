"""core: the library behind the audit dashboard for AI-generated-image detectors.

Nothing in this package imports streamlit. Label convention, written once in `core.data.labels`:
0 = REAL, 1 = FAKE (AI-generated); "probability" always means P(FAKE).
"""
