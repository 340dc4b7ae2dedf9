"""A small HTTP helper for the policy API: upload a local pack folder as a new version."""

from __future__ import annotations

from pathlib import Path

import httpx

from sentinel.rules import load_pack
from services.policy.packs import folder_files


def upload_folder(
    base_url: str, api_key: str, path: Path, timeout_s: float = 120
) -> httpx.Response:
    """POST the folder's files to /packs/{name}/versions, creating the pack when it is new."""
    name = load_pack(path).name
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s) as client:
        if client.get(f"/packs/{name}").status_code == 404:
            client.post("/packs", json={"name": name}).raise_for_status()
        return client.post(f"/packs/{name}/versions", json={"files": folder_files(path)})
