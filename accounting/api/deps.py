"""Request-scoped access to the service and its sites, with the 404s every route shares."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request

from accounting.api.types import AccountingServiceLike
from tanji.site import Site


def service(request: Request) -> AccountingServiceLike:
    return request.app.state.service


def site_or_404(svc: AccountingServiceLike, site_id: str) -> Site:
    site = svc.sites.get(site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r}; known sites: {', '.join(sorted(svc.sites)) or '(none)'}")
    return site


def selected_sites(svc: AccountingServiceLike, site_id: str | None) -> list[Site]:
    """One site when named (404 when unknown), else all, in id order."""
    if site_id is not None:
        return [site_or_404(svc, site_id)]
    return [svc.sites[k] for k in sorted(svc.sites)]


def site_tz(site: Site) -> ZoneInfo:
    """The site's zone (`Site.zone`, the one definition)."""
    return site.zone
