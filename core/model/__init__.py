"""The model and its training: the detector architectures (models), self-describing checkpoints loaded with
weights_only=True (checkpoint), ensembles of trained detectors (ensemble), Grad-CAM through `features`/`head`
(gradcam), training-time augmentation (augment) and training (train, `python -m core train`). Nothing is imported
here eagerly, so `import core.model` stays light; import the module you need, e.g.
`from core.model.checkpoint import load_checkpoint`.
"""
