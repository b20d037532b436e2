"""What hub and node share: settings, crypto, de-identification, wire schemas, audit."""

__version__ = "0.1.0"
