"""The Powertools logger, tracer and metrics shared by every function (one of each per container).

Never log request bodies, prompts, image bytes, base64, API keys or presigned URLs: log ids and sizes.
"""

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics()
