#!/usr/bin/env python3
"""Parses Prometheus text with the Prometheus project's own Python parser.

Usage: metrics_parse.py < METRICS_TEXT

Prints one JSON object: {"families": [{"name", "type", "samples": [{"name", "labels",
"value"}]}]}. tests/telemetry.rs asserts on it. Exits non-zero if the text does not parse:
a line the parser refuses raises, and so fails the test.
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = []
for family in text_string_to_metric_families(sys.stdin.read()):
    families.append(
        {
            "name": family.name,
            "type": family.type,
            "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
        }
    )
print(json.dumps({"families": families}))
