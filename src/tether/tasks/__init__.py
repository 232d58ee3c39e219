"""Built-in task types. Importing this module registers them."""

from tether.tasks import builtin  # noqa: F401
