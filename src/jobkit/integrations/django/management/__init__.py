"""The management commands of jobkit's Django app."""
