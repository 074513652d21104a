"""The command line: parses options into typed requests, calls one use case, renders its result.

The only layer that prints. It may import every other layer.
"""
