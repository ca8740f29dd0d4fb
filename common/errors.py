"""The errors a user meets for bad input, named once for every package."""


class DataError(ValueError):
  """Input data is missing or malformed; the message says where and why."""
