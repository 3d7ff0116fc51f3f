"""What a DICOM import did: the report it returns (paths, counts, reasons, ids; never values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ImportReport", "ImportedImageSet", "SkippedFile"]


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file the import did not load, and why (never an attribute value)."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportedImageSet:
    """One image set an import created or gave a new version."""

    image_set_id: str
    primary: bool
    version_id: int
    instances: int
    outcome: Literal["created", "new version"]
    #: why it is not primary, when it is not
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import loaded, where, and what it skipped and why."""

    datastore_id: str
    files: int
    imported: int
    duplicates: int
    undecodable_elements: int
    skipped: tuple[SkippedFile, ...]
    image_sets: tuple[ImportedImageSet, ...]

    @property
    def image_set_ids(self) -> tuple[str, ...]:
        """Ids of the image sets this import created or updated, in import order."""
        return tuple(s.image_set_id for s in self.image_sets)

    def skipped_by_reason(self) -> dict[str, int]:
        """How many files were skipped for each reason."""
        out: dict[str, int] = {}
        for s in self.skipped:
            out[s.reason] = out.get(s.reason, 0) + 1
        return out

    def lines(self) -> list[str]:
        """The report as text lines: counts, then each skipped path with its reason."""
        created = [s for s in self.image_sets if s.outcome == "created"]
        primary = sum(s.primary for s in created)
        out = [
            f"imported {self.imported} of {self.files} files into datastore {self.datastore_id}: "
            f"{len(created)} new image sets ({primary} primary, {len(created) - primary} non-primary), "
            f"{len(self.image_sets) - len(created)} new versions of primary image sets",
        ]
        if self.duplicates:
            out.append(f"{self.duplicates} files repeated an instance already imported (the later copy kept)")
        if self.undecodable_elements:
            out.append(f"{self.undecodable_elements} elements could not be decoded and are null")
        out.append(f"skipped {len(self.skipped)} files")
        out += [f"  {n} x {reason}" for reason, n in sorted(self.skipped_by_reason().items())]
        out += [f"  {s.path}: {s.reason}" for s in self.skipped]
        return out

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (the admin API's answer); counts, ids and paths, no values."""
        return {
            "datastoreId": self.datastore_id,
            "files": self.files,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "undecodableElements": self.undecodable_elements,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "imageSets": [
                {
                    "imageSetId": s.image_set_id,
                    "primary": s.primary,
                    "versionId": str(s.version_id),
                    "instances": s.instances,
                    "outcome": s.outcome,
                    "note": s.note,
                }
                for s in self.image_sets
            ],
        }
