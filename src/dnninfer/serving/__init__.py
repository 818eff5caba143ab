"""Vision serving beyond inference (AbouElhamayed et al., DAC 2024, arXiv 2403.12981).

A real HTTP server (FastAPI + uvicorn) that times every stage of a request (receive, decode,
resize, normalise, queue, infer, post-process, serialise), in a naive and an optimised pipeline,
plus a two-DNN pipeline (detector -> per-crop classifier) joined by an in-process queue or Redis,
a load generator and the ``serving`` bench. See docs/serving.md.
"""

from dnninfer.serving.images import SIZES, jpeg_for, make_jpeg
from dnninfer.serving.timing import STAGES, parse_stage_header

__all__ = ["SIZES", "STAGES", "jpeg_for", "make_jpeg", "parse_stage_header"]
