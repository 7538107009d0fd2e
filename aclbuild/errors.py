"""Every error aclbuild raises on purpose.

The CLI turns each of these into one line on stderr and the error's ``exit_code``: 2 for bad input (the user can
mend it), 1 for a failure of the work itself (network, remote, interrupted run). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class AclbuildError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1


class InputError(AclbuildError):
    """Bad input: a wrong name, a malformed file, an option out of range. Exit 2."""

    exit_code = 2


class UnknownNameError(InputError):
    """A dataset, base, labeler or strategy name that the registry does not know."""


class SourceError(InputError):
    """A source file (pickle, CSV, archive, image folder) that is missing, corrupt or inconsistent."""


class UnsafePickleError(SourceError):
    """A pickle that asks for an object outside the admitted numpy and builtin types."""


class OutputExistsError(InputError):
    """The output folder or file exists and is not empty, and --overwrite was not given."""


class InvalidRepositoryError(InputError):
    """A dataset repository folder that fails validation; ``problems`` holds one line per problem."""

    def __init__(self, folder: str, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{folder} is not a valid dataset repository: " + "; ".join(self.problems))


class DownloadError(AclbuildError):
    """A download that failed or whose checksum did not match. Exit 1."""


class HubError(AclbuildError):
    """A Hub operation that failed: unreachable endpoint, a refused request, a commit that did not land. Exit 1."""


class AuthError(HubError):
    """A Hub token that is missing, refused, or lacks the rights for the repository. Exit 1."""
