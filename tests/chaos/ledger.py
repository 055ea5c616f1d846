"""The chaos suite's counts: one row per scenario, printed as the table the issue asks for."""

from __future__ import annotations

from dataclasses import dataclass, field

COLUMNS = ("orphans", "double_runs", "duplicates", "leaks", "leases_left")


@dataclass
class Row:
    scenario: str
    repetitions: int = 0
    kills: int = 0
    orphans: int = 0
    double_runs: int = 0
    duplicates: int = 0
    leaks: int = 0
    leases_left: int = 0
    details: list[str] = field(default_factory=list)

    def bad(self) -> int:
        return sum(getattr(self, c) for c in COLUMNS)


@dataclass
class Ledger:
    rows: dict[str, Row] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, scenario: str) -> Row:
        return self.rows.setdefault(scenario, Row(scenario))

    def render(self) -> str:
        lines = [
            "| scenario | repetitions | kills | orphans | double runs | duplicates | leaks | leases left |",
            "|---|---|---|---|---|---|---|---|",
        ]
        total = Row("total")
        for row in self.rows.values():
            lines.append(
                f"| {row.scenario} | {row.repetitions} | {row.kills} | {row.orphans} | {row.double_runs} "
                f"| {row.duplicates} | {row.leaks} | {row.leases_left} |"
            )
            for name in ("repetitions", "kills", *COLUMNS):
                setattr(total, name, getattr(total, name) + getattr(row, name))
        lines.append(
            f"| **total** | {total.repetitions} | {total.kills} | {total.orphans} | {total.double_runs} "
            f"| {total.duplicates} | {total.leaks} | {total.leases_left} |"
        )
        details = [f"- {row.scenario}: {d}" for row in self.rows.values() for d in row.details]
        return "\n".join(
            lines + ([""] + details if details else []) + ([""] + self.notes if self.notes else [])
        )


LEDGER = Ledger()
