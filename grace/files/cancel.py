"""The one exception long work raises when its caller asked it to stop."""


class Cancelled(Exception):
    """Stopped on request between two batches; nothing was written."""
