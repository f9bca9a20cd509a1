"""One exception type for every user-facing failure; the CLI turns it into a one-line reason."""
from __future__ import annotations


class McGraphError(Exception):
    """A failure caused by the user's input (bad model, bad option, bad file).

    Messages name the component and, where there is one, the node:
    ``insert_masks: layer2.0 expects 4-D input, got (8, 16)``.
    """

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where}: {message}")
