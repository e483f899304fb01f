"""Run the mock OpenAI-compatible server on its own, for benchmarks and dry runs.

    python -m bench.server --port 8000 --latency 0.8 --latency-dist lognormal --error-rate 0.01 --pad 2000
    python -m bench.server --latency 1 --rate-limit 50/1 --retry-after     # a sliding-window rate limit
    python -m bench.server --latency 1 --request-bucket 50/50 --headers    # OpenAI's: a token bucket, headers

Prints the base URL to give a client, then serves until Ctrl-C. Run it from the repository root so
`pipeline` is importable. Request bodies are not recorded: nobody reads them here.
"""

from __future__ import annotations

import argparse
import asyncio

from pipeline.testing.mock_limits import BucketLimit
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Latency, lognormal_latency


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds per model call (the mean, if lognormal)"
    )
    parser.add_argument("--latency-dist", choices=("fixed", "lognormal"), default="fixed")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of model calls answered 500")
    parser.add_argument("--pad", type=int, default=0, help="characters of reasoning text added to each reply")
    parser.add_argument("--seed", type=int, default=0, help="seed for latency, errors and generated replies")
    parser.add_argument("--rate-limit", type=_rate_limit, metavar="CALLS/SECONDS",
                        help="accept at most CALLS model calls in any SECONDS; answer the rest 429 at once")
    parser.add_argument("--request-bucket", type=_bucket, metavar="BURST/PER_SECOND",
                        help="a token bucket of model calls: BURST at once, refilled at PER_SECOND")
    parser.add_argument("--token-bucket", type=_bucket, metavar="BURST/PER_SECOND",
                        help="a token bucket of tokens (prompt on arrival, completion on reply)")
    parser.add_argument("--retry-after", action="store_true",
                        help="with a limit: send Retry-After on its 429s (seconds until the call would fit)")
    parser.add_argument("--headers", action="store_true",
                        help="with a bucket: send OpenAI's x-ratelimit-* headers on every model call's reply")
    args = parser.parse_args(argv)
    if args.latency_dist == "lognormal" and args.latency <= 0:
        parser.error("--latency-dist lognormal needs a positive --latency (its mean)")
    if not 0 <= args.error_rate <= 1:
        parser.error("--error-rate is a fraction between 0 and 1")
    return args


def _rate_limit(text: str) -> tuple[int, float]:
    calls, _, seconds = text.partition("/")
    try:
        limit = int(calls), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CALLS/SECONDS such as 50/1, got {text!r}") from None
    if limit[0] < 1 or limit[1] <= 0:
        raise argparse.ArgumentTypeError(f"CALLS and SECONDS must be positive, got {text!r}")
    return limit


def _bucket(text: str) -> BucketLimit:
    burst, _, per_second = text.partition("/")
    try:
        limit = BucketLimit(float(burst), float(per_second))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BURST/PER_SECOND such as 50/50, got {text!r}") from None
    if limit.burst < 1 or limit.per_second <= 0:
        raise argparse.ArgumentTypeError(f"BURST must be at least 1 and PER_SECOND positive, got {text!r}")
    return limit


async def serve(server: MockServer) -> None:
    async with server:
        print(server.base_url, flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    latency: Latency = lognormal_latency(args.latency) if args.latency_dist == "lognormal" else args.latency
    server = MockServer(
        port=args.port,
        seed=args.seed,
        latency=latency,
        error_rate=args.error_rate,
        pad_chars=args.pad,
        record_bodies=False,
        rate_limit=args.rate_limit,
        rate_limit_retry_after=args.retry_after,
        request_bucket=args.request_bucket,
        token_bucket=args.token_bucket,
        rate_limit_headers=args.headers,
    )
    try:
        asyncio.run(serve(server))
    except KeyboardInterrupt:
        stats = server.stats()
        print(f"stopped after {stats.requests} requests; statuses {stats.by_status}", end="; ")
        print(f"at most {stats.max_in_flight} in flight")


if __name__ == "__main__":
    main()
