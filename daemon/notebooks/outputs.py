"""A cell's outputs, built from the kernel's iopub messages in nbformat's shape.

What a Jupyter front end does with the same messages: consecutive prints to one stream become one
output, `clear_output(wait=True)` clears when the next output comes, and `update_display_data`
replaces the output with the same display id. Everything a cell prints is held in memory and sent
back in one reply, so the total is bounded: past `limit` bytes, further output is dropped and a
note says so (a `while True: print(...)` cell must not grow the daemon until the time limit).
"""

from __future__ import annotations

from typing import Any

from nbformat import NotebookNode
from nbformat.v4 import new_output, output_from_msg

#: Each output type's fields, and the type each must have for the notebook to stay valid.
OUTPUT_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "stream": {"name": str, "text": str},
    "display_data": {"metadata": dict, "data": dict},
    "execute_result": {"metadata": dict, "data": dict, "execution_count": (int, type(None))},
    "error": {"ename": str, "evalue": str, "traceback": list},
}
OUTPUT_TYPES = tuple(OUTPUT_FIELDS)
TRUNCATED = "\n[opentermd: output truncated: the cell printed more than {limit} bytes]\n"


class CellOutputs:
    def __init__(self, limit: int) -> None:
        self.outputs: list[Any] = []
        self.execution_count: int | None = None
        self._limit = limit
        self._size = 0
        self._truncated = False
        self._clear_on_next = False
        #: display_id -> the outputs showing it (update_display_data replaces their data).
        self._displays: dict[str, list[Any]] = {}

    def add(self, msg: dict[str, Any]) -> None:
        kind, content = msg["header"]["msg_type"], msg["content"]
        if kind == "execute_input":
            self.execution_count = content.get("execution_count")
        elif kind == "clear_output":
            if content.get("wait"):
                self._clear_on_next = True
            else:
                self._clear()
        elif kind == "update_display_data":
            self._update_display(content)
        elif kind in OUTPUT_TYPES:
            self._add_output(msg)

    def _clear(self) -> None:
        self.outputs.clear()
        self._displays.clear()
        self._clear_on_next = False

    def _add_output(self, msg: dict[str, Any]) -> None:
        if self._clear_on_next:
            self._clear()
        output = output_node(msg)
        if not self._fits(output):
            return
        last = self.outputs[-1] if self.outputs else None
        if (output.output_type == "stream" and last is not None and last.output_type == "stream"
                and last.name == output.name):
            last.text += output.text
        else:
            self.outputs.append(output)
        display_id = msg["content"].get("transient", {}).get("display_id")
        if display_id and output.output_type in ("display_data", "execute_result"):
            self._displays.setdefault(display_id, []).append(output)

    def _update_display(self, content: dict[str, Any]) -> None:
        for output in self._displays.get(content.get("transient", {}).get("display_id", ""), []):
            output.data = content.get("data", {})
            output.metadata = content.get("metadata", {})

    def _fits(self, output: Any) -> bool:
        if self._truncated:
            return False
        self._size += _size(output)
        if self._size <= self._limit:
            return True
        self._truncated = True
        self.outputs.append(new_output("stream", name="stderr", text=TRUNCATED.format(limit=self._limit)))
        return False

    def add_error(self, name: str, value: str) -> None:
        """An error of our own (time limit, dead kernel), in the same shape as the kernel's."""
        self.outputs.append(new_output("error", ename=name, evalue=value, traceback=[f"{name}: {value}"]))

    def as_dicts(self) -> list[dict[str, Any]]:
        """Plain dicts for the JSON reply (nbformat's nodes are dict subclasses; copies keep later
        changes to the notebook out of a reply being written)."""
        return [_plain(output) for output in self.outputs]


def output_node(msg: dict[str, Any]) -> Any:
    """nbformat's output for an iopub message. nbformat's own `output_from_msg` checks each output
    against the JSON schema, a third of a `1+1` round trip: a well-typed message (what kernels send)
    is taken as it is, and only an odd one goes through nbformat's check (which refuses it)."""
    kind, content = msg["header"]["msg_type"], msg["content"]
    fields = OUTPUT_FIELDS[kind]
    if not all(isinstance(content.get(name), expected) for name, expected in fields.items()):
        return output_from_msg(msg)
    output = NotebookNode(output_type=kind)
    output.update({name: content[name] for name in fields})
    return output


def _size(output: Any) -> int:
    if output.output_type == "stream":
        return len(output.text)
    if output.output_type == "error":
        return sum(len(line) for line in output.traceback) + len(output.evalue)
    return sum(len(value) if isinstance(value, str) else len(str(value)) for value in output.data.values())


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value
