"""core: the library behind the audit dashboard for AI-generated-image detectors.

Subpackages by concern: data (decoding, labels, preprocessing, dataset adapters, shifts), model (architectures,
checkpoints, ensembles, Grad-CAM, training), verdict (REAL/FAKE/UNSURE), inference (evaluate, predict),
metrics, audits (generalize, robustness, stability, compare, slices, forensics, limitations) and report (HTML
report, model cards, figures). The command line is `python -m core TOOL ARGS` (`python -m core` lists the tools).

Nothing in this package imports streamlit. Label convention, written once in `core.data.labels`:
0 = REAL, 1 = FAKE (AI-generated); "probability" always means P(FAKE).
"""
