"""``provider add --check``: one cheap authenticated call to see that a key works.

GET the provider's model list (OpenAI flavor: {base}/models; Anthropic: {base}/v1/models).
It costs nothing, and a 401/403 means the key is wrong. The key goes only in the header the
provider expects; errors name the HTTP status, never the key.
"""

from __future__ import annotations

import httpx


class ProviderCheckError(Exception):
    pass


def check_key(api: str, base_url: str, key: str, timeout: float = 15.0) -> int:
    """Return the number of models the key can see; raise ProviderCheckError if it fails."""
    base = base_url.rstrip("/")
    if api == "anthropic":
        url = f"{base}/v1/models"
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    else:
        url = f"{base}/models"
        headers = {"authorization": f"Bearer {key}"}
    try:
        r = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ProviderCheckError(f"could not reach {url}: {type(exc).__name__}") from None
    if r.status_code in (401, 403):
        raise ProviderCheckError(f"the provider refused the key (HTTP {r.status_code})")
    if r.status_code != 200:
        raise ProviderCheckError(f"{url} answered HTTP {r.status_code}")
    try:
        data = r.json().get("data", [])
    except (ValueError, AttributeError):
        raise ProviderCheckError(f"{url} did not answer with a model list") from None
    return len(data) if isinstance(data, list) else 0
