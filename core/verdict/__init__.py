"""The verdict: REAL, FAKE or UNSURE and why, from a conformal band near the threshold and a familiarity score
(verdict, fitted at training time and stored in the checkpoint), and the command that summarises or recalibrates
a checkpoint's verdict (recalibrate, `python -m core recalibrate`), which sits above training and evaluation so
that verdict itself imports neither.
"""
