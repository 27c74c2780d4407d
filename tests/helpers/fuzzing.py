"""What the property-based parser tests share: their hypothesis settings and the encodings and
byte-order marks that mutations re-encode a valid file with."""

from __future__ import annotations

import codecs

from hypothesis import HealthCheck, settings

#: The default run: a few seconds per parser, the same cases every time.
QUICK = settings(max_examples=150, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])
#: The ``slow``-marked runs: many more cases, the same every time (so CI is deterministic).
THOROUGH = settings(max_examples=1000, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
#: Encodings a user's file may really be in instead of UTF-8.
ENCODINGS = ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-32", "utf-8-sig", "shift_jis"]
BOMS = [codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE]
