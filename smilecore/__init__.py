"""smilecore: the SMILE engine (semi-supervised pseudo-normality synthesis) without Slicer.

Layers above it (the Slicer modules) import it; it imports only torch, numpy, nibabel,
tqdm and Pillow.
"""
__version__ = "0.1.0"
