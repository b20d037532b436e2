"""The storage the hub's routes use (local disk under the hub's settings)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from hub.deps import RuntimeDep
from hub.storage.service import LocalStorage, Storage


def storage(hub: RuntimeDep) -> Storage:
    return LocalStorage(hub.settings.storage_root)


StorageDep = Annotated[Storage, Depends(storage)]
