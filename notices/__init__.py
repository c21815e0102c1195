"""The support site of seed 000: support IDs, maintenance/outage notices and their mail."""
