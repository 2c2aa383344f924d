"""darkroom: a serverless, multi-tenant, OpenAI-compatible image API on AWS."""

__version__ = "0.1.0"
