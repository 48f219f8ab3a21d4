"""The audits, each a library function with its own command (`python -m core TOOL`): leave-one-generator-out
(generalize), robustness sweeps and the Grad-CAM audit (robustness), verdict stability under everyday edits
(stability), two models compared on the same data (compare), error slices (slices), frequency forensics and the
shortcut check (forensics), and the Limitations audit that draws on them (limitations). Nothing is imported here
eagerly.
"""
