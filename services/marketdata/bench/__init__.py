"""`marketdata bench`: the platform measured end to end against its targets and its ceilings, in one run."""
