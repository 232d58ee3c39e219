"""Built-in task types. Importing this module registers them."""

from tether.tasks import builtin, csv_steps, fetch, sentinel  # noqa: F401
