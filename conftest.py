"""Test configuration shared by tests/ and the doctests in geobind/."""

import os

# No test touches the network: an offline hub lookup fails at once instead of retrying for ~47 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
