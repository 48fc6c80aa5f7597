"""Low-light enhancers (Zero-DCE, Zero-DCE++, SCI, gamma, none): build, import the authors'
weights, fit zero-reference on the dataset's own dark frames, apply, preview.
"""
