"""The root of the project's error hierarchy.

Every layer defines its own errors under :class:`ClusternetError` so that each boundary (the
tunnel session, the API server edge, the CLI) can catch the project's errors in one place and map
them to its own vocabulary: a tunnel RESET code, a ``metav1.Status``, an exit code.
"""


class ClusternetError(Exception):
    """Base class of every error raised on purpose by clusternet-aa."""
