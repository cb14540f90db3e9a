"""Typed errors, and the exit codes the CLI maps them to."""
import enum


class ExitCode(enum.IntEnum):
    """Every exit code of the command line, in one table."""

    OK = 0
    FAILED = 1          # a build failed, or checks failed
    BAD_INPUT = 2       # a profile, an option, a path (click's usage errors too)
    HOST = 3            # the host lacks something ('check' says what)
    INTERNAL = 70       # an unexpected exception, a bug (EX_SOFTWARE, sysexits.h)
    INTERRUPTED = 130   # Ctrl-C or SIGTERM (128 + SIGINT)


class TroveImageBuilderError(Exception):
    """Base class: a message for the user and an exit code."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(TroveImageBuilderError):
    """Bad input: a profile, an option, a path. Exit code 2."""

    exit_code = ExitCode.BAD_INPUT


class ProfileError(InputError):
    """A profile is wrong: names the file and the field."""

    def __init__(self, source: str, field: str | None, message: str):
        self.source = source
        self.field = field
        where = f"{source}: {field}: " if field else f"{source}: "
        super().__init__(where + message)


class HostError(TroveImageBuilderError):
    """The build host lacks something the work needs. Exit code 3."""

    exit_code = ExitCode.HOST


class BuildError(TroveImageBuilderError):
    """A build ran and failed. Exit code 1."""

    exit_code = ExitCode.FAILED


class VerifyError(TroveImageBuilderError):
    """Verification found a problem. Exit code 1."""

    exit_code = ExitCode.FAILED
