"""The regression gate a CI job runs after requantization (``gate``)."""
