"""The exceptions every user-facing failure raises; the CLI turns them into a one-line reason."""
from __future__ import annotations


class McGraphError(Exception):
    """A failure caused by the user's input (bad model, bad option, bad file).

    Messages name the component and, where there is one, the node:
    ``insert_masks: layer2.0 expects 4-D input, got (8, 16)``. ``option`` names the config field
    (or fields) the message is about, in Python spelling (``freeze_at``); the CLI shows each as
    its flag (``--freeze-at``).
    """

    def __init__(self, where: str, message: str, option: str | tuple[str, ...] | None = None):
        self.where, self.message, self.option = where, message, option
        super().__init__(f"{where}: {message}")


class Interrupted(McGraphError):
    """Ctrl-C during training: the state was saved; the CLI exits with 130."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (library tracebacks are long), for one-line
    errors."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def state_dict_error(e: BaseException, limit: int = 240) -> str:
    """What ``load_state_dict`` objected to, in one line: its first specific line ("size mismatch
    for conv1.weight: ...", "Missing key(s) ...") rather than its header ("Error(s) in loading
    state_dict for X:"), and how many more there are."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    detail = [ln for ln in lines if not ln.startswith("Error(s) in loading state_dict")]
    if not detail:
        return first_line(e, limit)
    more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
    return detail[0][:limit] + more
