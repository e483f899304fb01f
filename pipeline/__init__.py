"""kefu-qa: LLM-graded quality inspection of customer-service chats, and proof of when to trust it.

The library's modules each own one concept (see README.md); `pipeline.cli.main` is the `kefu` command.
"""

__version__ = "0.1.0"
