"""The errors alpha raises on purpose.

Every one carries a message that names what is wrong and what to do about it, so the CLI
and the flows can show it as is, without a traceback. Secrets never go into a message.
"""


class AlphaError(Exception):
    """Base of every error alpha raises for a problem the user can fix."""


class ConfigError(AlphaError):
    """A setting is missing or invalid."""


class ServiceUnavailable(AlphaError):
    """A service (S3, Label Studio, Prefect) cannot be reached or refused our credentials."""


class ServiceRefused(ServiceUnavailable):
    """The service answered and refused what our settings ask (credentials, a bucket that
    does not exist, a bad request): waiting will not change its answer, so it is not
    retried."""


class ImageError(AlphaError):
    """An image cannot be read: corrupt, truncated, empty, or not an image at all."""


class AnnotationError(AlphaError):
    """An annotation from Label Studio does not fit the project's label config."""


class DataError(AlphaError):
    """The data in the bucket is not what a step needs (no labels yet, an unknown class...)."""
