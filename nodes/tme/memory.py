"""Kept only for ``mnemoflow chat tme`` (mnemoflow/cli/chat.py), which imports :func:`load_conversation` from here.

A conversation is loaded and saved by :mod:`mnemoflow.nodes.tme.conversation`; its records are
:mod:`mnemoflow.nodes.tme.model`'s. Delete this module once the CLI imports from ``conversation``.
"""

from mnemoflow.nodes.tme.conversation import load_conversation

__all__ = ["load_conversation"]
