"""Test-only knobs for the CSV import, loaded into the server under test as a Django app
(``TETHER_APPS=tests.acceptance.dataset_knobs``) so that a test can catch an import
midway however fast the importer gets:

- ``ACC_IMPORT_BATCH_ROWS``: rows per committed batch (``loader.BATCH_ROWS``);
- ``ACC_IMPORT_BATCH_DELAY_MS``: a pause before each batch is written.

Neither changes what is imported, only how fast.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.apps import AppConfig


class DatasetKnobs(AppConfig):
    name = "tests.acceptance.dataset_knobs"
    label = "acc_dataset_knobs"

    def ready(self) -> None:
        from tether.datasets import loader

        rows = os.environ.get("ACC_IMPORT_BATCH_ROWS")
        if rows:
            loader.BATCH_ROWS = int(rows)
        delay = float(os.environ.get("ACC_IMPORT_BATCH_DELAY_MS") or 0) / 1000
        if delay:
            batch = loader.Loader._batch

            def slow_batch(*args: Any, **kwargs: Any) -> Any:  # every path, every database
                time.sleep(delay)
                return batch(*args, **kwargs)

            loader.Loader._batch = slow_batch  # type: ignore[method-assign]
