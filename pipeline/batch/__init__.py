"""Grading through a provider's Batch API or vLLM's run_batch: files, submission, collection."""
