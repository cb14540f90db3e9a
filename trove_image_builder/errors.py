"""Typed errors; the CLI maps them to exit codes."""


class TroveImageBuilderError(Exception):
    """Base class: a message for the user and an exit code."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(TroveImageBuilderError):
    """Bad input: a profile, an option, a path. Exit code 2."""

    exit_code = 2


class ProfileError(InputError):
    """A profile is wrong: names the file and the field."""

    def __init__(self, source: str, field: str | None, message: str):
        self.source = source
        self.field = field
        where = f"{source}: {field}: " if field else f"{source}: "
        super().__init__(where + message)


class HostError(TroveImageBuilderError):
    """The build host lacks something the work needs. Exit code 3."""

    exit_code = 3


class BuildError(TroveImageBuilderError):
    """A build ran and failed. Exit code 1."""

    exit_code = 1


class VerifyError(TroveImageBuilderError):
    """Verification found a problem. Exit code 1."""

    exit_code = 1
