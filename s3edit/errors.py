"""Errors a user can cause. Each carries one sentence that says what is wrong and,
where there is one, what to do; the CLI prints it on stderr and exits nonzero
(see ``s3edit.cli.app``). Library callers catch ``S3EditError``."""


class S3EditError(Exception):
    """A problem the user can fix: bad input, missing weights, a clashing path."""

    exit_code = 1


class InputError(S3EditError):
    """An input file is missing, unreadable, not a video, or holds no usable frames."""


class NoFaceError(S3EditError):
    """No face could be found where one is needed."""


class OutputError(S3EditError):
    """An output path cannot be written, or would overwrite an input."""


class WeightsError(S3EditError):
    """Model weights are missing, corrupt, or do not fit the model."""


class JobError(S3EditError):
    """A job directory is missing a stage, or was made by an incompatible version."""
