"""The only place the openai SDK is used: the client, retries, pacing, the embedded local model."""
