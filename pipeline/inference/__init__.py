"""The trained student on new video: predict, long-video windows and timelines, ONNX and
TorchScript export, and what `dlkdd predict` prints (`printed`).
"""
