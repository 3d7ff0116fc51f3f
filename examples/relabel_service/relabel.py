"""A small service that re-labels a study: it sets StudyDescription on every image set of the study.

The same behaviour three ways, as a team might have it: with async-hi's client
(``relabel_study``), with a raw aiobotocore client (``relabel_study_aioboto``)
and with a boto3 client (``relabel_study_boto3``). For each image set, in order:

1. read its state (GetImageSet): a DELETED image set is skipped and reported;
2. read its metadata (GetImageSetMetadata): one that already carries the label
   is left alone (running the service twice changes nothing);
3. write the label at the version read (UpdateImageSetMetadata, study level).

When the write is refused because the version moved (another writer got
there first: 409 ConflictException, or 404 ResourceNotFoundException, which is
how the real service words a stale ``latestVersion``) or the image set is
LOCKED by another update, the service reads again and retries; a 429 is
retried after a backoff; both within ``attempts``. async-hi's client does all
of that itself. The tests (``test_relabel.py``) run it against the emulator
with async_hi.testing's fixtures only.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from botocore.exceptions import ClientError

from async_hi import HealthImagingClient, ImageSetDeletedError, MetadataUpdate, UpdateBuilder

__all__ = ["GaveUpError", "Report", "relabel_study", "relabel_study_aioboto", "relabel_study_boto3"]

# refusals worth another read and another try: the version moved, LOCKED, throttled, a 5xx
_AGAIN = {"ConflictException", "ResourceNotFoundException", "ThrottlingException", "InternalServerException"}


@dataclass
class Report:
    """What the service did to each image set of the study."""

    relabelled: dict[str, str] = field(default_factory=dict)  # image set id -> the version it wrote
    unchanged: list[str] = field(default_factory=list)  # already labelled
    deleted: list[str] = field(default_factory=list)  # DELETED, skipped


class GaveUpError(Exception):
    """The image set could not be re-labelled within the attempts allowed."""


def _update_document(label: str) -> dict[str, Any]:
    doc = {"SchemaVersion": 1.1, "Study": {"DICOM": {"StudyDescription": label}}}
    return {"DICOMUpdates": {"updatableAttributes": json.dumps(doc).encode()}}


def _label_of(metadata: Mapping[str, Any]) -> Any:
    return metadata.get("Study", {}).get("DICOM", {}).get("StudyDescription")


def _again(exc: ClientError, writing: bool) -> bool:
    code = exc.response["Error"]["Code"]
    # a 404 on the write is the stale-version answer; on a read the image set is not there
    return code in _AGAIN and (writing or code != "ResourceNotFoundException")


def _backoff(attempt: int, base: float) -> float:
    return min(2.0, base * 2**attempt)


# -- with async-hi's HealthImagingClient ---------------------------------------------------------


async def relabel_study(
    hi: HealthImagingClient, datastore_id: str, image_set_ids: Iterable[str], label: str
) -> Report:
    """Re-label with async-hi: conflicts, LOCKED image sets, throttles and lost answers are the client's."""
    report = Report()

    def rebase(fresh: Mapping[str, Any], update: MetadataUpdate) -> MetadataUpdate | None:
        return None if _label_of(fresh) == label else update  # someone else set it meanwhile: done

    for i in image_set_ids:
        info = await hi.get_image_set(datastore_id, i)
        if info.deleted:
            report.deleted.append(i)
            continue
        if _label_of(await hi.get_image_set_metadata(datastore_id, i)) == label:
            report.unchanged.append(i)
            continue
        update = UpdateBuilder(datastore_id, i).study(StudyDescription=label).build()
        try:
            result = await hi.update_image_set_metadata(update, version_hint=info.version_id, rebase=rebase)
        except ImageSetDeletedError:
            report.deleted.append(i)
            continue
        if result.outcome == "dropped":
            report.unchanged.append(i)
        else:
            report.relabelled[i] = result.latest_version_id
    return report


# -- with a raw aiobotocore client ----------------------------------------------------------------


async def relabel_study_aioboto(
    client: Any,
    datastore_id: str,
    image_set_ids: Iterable[str],
    label: str,
    *,
    attempts: int = 8,
    backoff: float = 0.05,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> Report:
    """Re-label with an aiobotocore ``medical-imaging`` client, retrying as described above."""
    report = Report()
    for i in image_set_ids:
        for attempt in range(attempts):
            writing = False
            try:
                info = await client.get_image_set(datastoreId=datastore_id, imageSetId=i)
                if info["imageSetState"] == "DELETED":
                    report.deleted.append(i)
                    break
                if info["imageSetState"] != "LOCKED":
                    got = await client.get_image_set_metadata(datastoreId=datastore_id, imageSetId=i)
                    async with got["imageSetMetadataBlob"] as blob:
                        metadata = json.loads(gzip.decompress(await blob.read()))
                    if _label_of(metadata) == label:
                        report.unchanged.append(i)
                        break
                    writing = True
                    done = await client.update_image_set_metadata(
                        datastoreId=datastore_id,
                        imageSetId=i,
                        latestVersionId=info["versionId"],
                        updateImageSetMetadataUpdates=_update_document(label),
                    )
                    report.relabelled[i] = done["latestVersionId"]
                    break
            except ClientError as exc:
                if not _again(exc, writing):
                    raise
            await sleep(_backoff(attempt, backoff))
        else:
            raise GaveUpError(f"image set {i}: not re-labelled after {attempts} attempts")
    return report


# -- with a boto3 client --------------------------------------------------------------------------


def relabel_study_boto3(
    client: Any,
    datastore_id: str,
    image_set_ids: Iterable[str],
    label: str,
    *,
    attempts: int = 8,
    backoff: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> Report:
    """Re-label with a boto3 ``medical-imaging`` client, retrying as described above."""
    report = Report()
    for i in image_set_ids:
        for attempt in range(attempts):
            writing = False
            try:
                info = client.get_image_set(datastoreId=datastore_id, imageSetId=i)
                if info["imageSetState"] == "DELETED":
                    report.deleted.append(i)
                    break
                if info["imageSetState"] != "LOCKED":
                    got = client.get_image_set_metadata(datastoreId=datastore_id, imageSetId=i)
                    metadata = json.loads(gzip.decompress(got["imageSetMetadataBlob"].read()))
                    if _label_of(metadata) == label:
                        report.unchanged.append(i)
                        break
                    writing = True
                    done = client.update_image_set_metadata(
                        datastoreId=datastore_id,
                        imageSetId=i,
                        latestVersionId=info["versionId"],
                        updateImageSetMetadataUpdates=_update_document(label),
                    )
                    report.relabelled[i] = done["latestVersionId"]
                    break
            except ClientError as exc:
                if not _again(exc, writing):
                    raise
            sleep(_backoff(attempt, backoff))
        else:
            raise GaveUpError(f"image set {i}: not re-labelled after {attempts} attempts")
    return report
