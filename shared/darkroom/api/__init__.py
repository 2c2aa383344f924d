"""The OpenAI wire surface: request/response models, the error envelope, the shared resolver."""
