"""The Batch API's limits on one request file, and the warning when a chosen limit is over them.

Apart from `batch` so that `kefu batch write` can show them as option defaults without importing the batch
machinery, which every `kefu` start-up (a grade's too) would then pay.
"""

from __future__ import annotations

MAX_REQUESTS = 50_000
"""OpenAI's limit on requests per batch file."""
MAX_BYTES = 200_000_000
"""OpenAI's limit on the size of a batch input file: 200 MB, in decimal megabytes (not 200 MiB)."""


def over_limits(max_requests: int, max_bytes: int) -> list[str]:
    """A line for each chosen file limit above OpenAI's (Chinese first): such files may be refused at upload."""
    lines = []
    if max_requests > MAX_REQUESTS:
        lines.append(f"--max-requests {max_requests:,} 超过 OpenAI 每个批次文件 {MAX_REQUESTS:,} 个请求的上限 "
                     "(over OpenAI's limit of requests per batch file; other providers may differ)")
    if max_bytes > MAX_BYTES:
        lines.append(f"--max-bytes {max_bytes:,} 超过 OpenAI 批次文件 {MAX_BYTES:,} 字节 (200 MB) 的上限 "
                     "(over OpenAI's batch file size limit; other providers may differ)")
    return lines
