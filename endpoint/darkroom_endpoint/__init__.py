"""darkroom's model server: SageMaker's hosting contract (``GET /ping``, ``POST /invocations``) around
darkroom's JSON container contract (docs/deploying-backends.md), served by real diffusers and
transformers models. It runs on the GPU endpoint; nothing of it enters the Lambda layer."""
