"""Placeholder: replaced by the layer's real commands."""


def register(subparsers):
    return None
