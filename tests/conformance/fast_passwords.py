"""Loaded into the servers and workers under test as a Django app (TETHER_APPS): fast
password hashing, as tests/conftest.py sets for the in-process tests. Every conformance
test registers and logs in fresh users; PBKDF2 would cost about 0.6 s per user and
deployment. Nothing in the contract depends on the hasher."""

from __future__ import annotations

from django.conf import settings

settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
