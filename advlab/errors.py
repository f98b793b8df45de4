"""Errors that mean "bad input or usage": the CLI prints them in one line and exits with code 2.

They subclass ValueError so Python users can catch them the usual way.
"""


class AdvlabError(ValueError):
    """Bad input or usage. The message says what is wrong and how to fix it."""


class DataNotFoundError(AdvlabError):
    """A dataset's files are not in any of the places advlab looks, and could not be downloaded."""


class CorruptFileError(AdvlabError):
    """A file exists but is truncated, has a wrong header, or fails its checksum."""


class ConfigError(AdvlabError):
    """A configuration has an unknown key, a wrong type, or a value out of range."""
