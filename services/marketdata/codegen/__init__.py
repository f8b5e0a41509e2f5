"""Generates everything derived from proto/: Python modules and stubs, the descriptor set and the OpenAPI document."""
