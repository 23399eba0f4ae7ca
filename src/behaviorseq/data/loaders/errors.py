"""The error every loader raises for malformed input."""

from __future__ import annotations

from os import PathLike
from pathlib import Path


class DataFormatError(ValueError):
    """A source file (or table) holds a value the loader cannot read.

    ``file`` is the path (or a label such as ``<pandas.DataFrame>``), ``line`` the 1-based line number in
    the file counting header lines (for Parquet and in-memory tables: the 1-based row number, and the
    message says "row"), ``field`` the field's name; each may be None when it does not apply. The message
    reads e.g. ``Beauty.txt, line 17, field 'item': invalid integer 'x1'``.
    """

    def __init__(
        self,
        file: str | PathLike | None,
        line: int | None,
        field: str | None,
        reason: str,
        *,
        unit: str = "line",
    ) -> None:
        self.file = None if file is None else str(file)
        self.line = line
        self.field = field
        self.reason = reason
        self.unit = unit
        where = [
            Path(self.file).name if self.file and not self.file.startswith("<") else (self.file or "<data>")
        ]
        if line is not None:
            where.append(f"{unit} {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {reason}")

    def __reduce__(self):  # keep the attributes when the error crosses a process boundary
        return (_rebuild, (self.file, self.line, self.field, self.reason, self.unit))


def _rebuild(file, line, field, reason, unit):
    return DataFormatError(file, line, field, reason, unit=unit)
