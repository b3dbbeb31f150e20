"""One exception type per family; messages say what was given, what is accepted and what to do."""


class FmclsError(Exception):
    """Base class of every error fmcls raises on purpose."""


class UnknownNameError(FmclsError, KeyError):
    """A name (task, domain, backbone, template set, parameter) that fmcls does not know."""

    def __init__(self, kind: str, given, accepted):
        self.kind, self.given, self.accepted = kind, given, list(accepted)
        super().__init__(f"unknown {kind} {given!r}; accepted: {', '.join(map(str, self.accepted))}")

    def __str__(self):  # KeyError would otherwise repr() the message
        return self.args[0]


class IncompatibleWeightsError(FmclsError, ValueError):
    """State dicts that cannot be combined or loaded (names the first mismatching key)."""


class OfflineModelError(FmclsError, RuntimeError):
    """A real (downloadable) model was requested but it is not cached and the network is off."""


class CorruptFileError(FmclsError, OSError):
    """A cached or shipped file whose content does not match its recorded hash."""


class MissingModelError(FmclsError, FileNotFoundError):
    """An embedded model that is neither shipped intact nor built in the cache: says which ``fmcls build`` to run."""
