"""Video: text to video (AnimateDiff, native video pipelines), video to video, frame interpolation.

The public module is `service.py` (typed requests and the functions that run them as jobs); `media`
(files in and out), `flow` (optical flow) and `pipelines` (the models) are its parts.
"""
