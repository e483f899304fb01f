"""The Batch API's limits on one request file.

Apart from `batch` so that `kefu batch write` can show them as option defaults without importing the batch
machinery, which every `kefu` start-up (a grade's too) would then pay.
"""

from __future__ import annotations

MAX_REQUESTS = 50_000
"""OpenAI's limit on requests per batch file."""
MAX_BYTES = 200 * 1024**2
"""OpenAI's limit on the size of a batch input file."""
